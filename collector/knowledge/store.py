"""Adding, listing and removing knowledge documents in the store; every change bumps the knowledge revision."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import delete, event, func, select, update
from sqlmodel import Session

from collector.knowledge.chunking import chunk_document
from collector.knowledge.documents import clean, unique
from collector.knowledge.loaders import load_document
from core.errors import InputError, NotFoundError
from core.knowledge_models import KnowledgeChunk, KnowledgeDocument, KnowledgeRevision
from core.models import utcnow
from core.settings import Settings

SAMPLE_DIR = Path(__file__).parent.parent / "sample"
PRODUCT_SHEET_PATH = SAMPLE_DIR / "gadgetcorp_products.md"  # GadgetCorp's products: specs, warranty, troubleshooting
FAQ_PATH = SAMPLE_DIR / "gadgetcorp_faq.jsonl"  # returns, refunds, shipping, warranty claims, opening hours
SAMPLE_DOCUMENTS = (PRODUCT_SHEET_PATH, FAQ_PATH)
# held-out product questions with answers written from the sheet (bench/knowledge.py scores replies on them)
QUESTIONS_PATH = SAMPLE_DIR / "knowledge_questions.jsonl"


class DocumentSummary(BaseModel):
    """A knowledge document as `knowledge list` shows it."""

    id: int
    name: str
    title: str
    kind: str
    brand: str  # "": every brand
    products: list[str]
    passages: int
    chars: int
    content_sha256: str
    created_at: datetime


class AddResult(BaseModel):
    document: DocumentSummary
    status: Literal["added", "replaced", "unchanged"]


def current_revision(session: Session) -> int:
    """The knowledge revision: changes with every add or remove, so a cached index knows it is stale."""
    return (
        session.execute(select(KnowledgeRevision.revision).where(KnowledgeRevision.id == 1)).scalar_one_or_none() or 0
    )


# when this process last read each store's knowledge revision (index key -> time.monotonic()); the API's grounding
# trusts a recent read instead of reading it again (`retrieval.ground_from_memory`). A change made in this process
# forgets every read, when it is made and again once it is committed, so it is seen at once.
revision_reads: dict[str, float] = {}


def forget_revision_reads(*_: object) -> None:
    revision_reads.clear()


def _bump_revision(session: Session) -> None:
    forget_revision_reads()
    event.listen(session, "after_commit", forget_revision_reads, once=True)
    # one UPDATE ... SET revision = revision + 1: concurrent writers each add their own step
    result = session.execute(
        update(KnowledgeRevision)
        .where(KnowledgeRevision.id == 1)
        .values(revision=KnowledgeRevision.revision + 1, updated_at=utcnow())
    )
    if result.rowcount == 0:  # a store whose counter row was removed by hand
        session.add(KnowledgeRevision(id=1, revision=1))
    session.flush()


def _summary(session: Session, document: KnowledgeDocument) -> DocumentSummary:
    passages = session.execute(
        select(func.count(KnowledgeChunk.id)).where(KnowledgeChunk.document_id == document.id)
    ).scalar_one()
    return DocumentSummary(passages=passages, **document.model_dump(exclude={"source_path"}))


def add_document(
    session: Session,
    path: Path,
    *,
    name: str | None = None,
    kind: str | None = None,
    brand: str | None = None,
    products: Iterable[str] = (),
    settings: Settings,
) -> AddResult:
    """Parse, chunk and store one file. The same (brand, name) again replaces the earlier one (unchanged: no-op)."""
    path = Path(path).expanduser()
    loaded = load_document(path, kind=kind, max_bytes=int(settings.knowledge_max_file_mb * 1_000_000))
    name = clean(name or path.name)
    if not name:
        raise InputError("a knowledge document needs a name; give --name")
    brand = clean(brand or loaded.brand or "")
    declared = unique([*loaded.products, *(clean(p) for p in products if clean(p))])
    chunks = chunk_document(loaded, settings.knowledge_chunk_words)
    existing = session.execute(
        select(KnowledgeDocument).where(KnowledgeDocument.brand == brand, KnowledgeDocument.name == name)
    ).scalar_one_or_none()
    if existing is not None and existing.content_sha256 == loaded.content_sha256 and existing.products == declared:
        return AddResult(document=_summary(session, existing), status="unchanged")
    if existing is not None:
        session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.document_id == existing.id))
        document = existing
        document.created_at = utcnow()
    else:
        document = KnowledgeDocument(name=name, brand=brand, title="", kind=loaded.kind, content_sha256="")
    document.title = loaded.title
    document.kind = loaded.kind
    document.products = declared
    document.source_path = str(path.resolve())
    document.content_sha256 = loaded.content_sha256
    document.chars = loaded.chars
    session.add(document)
    session.flush()
    session.add_all(
        KnowledgeChunk(document_id=document.id, position=position, title=chunk.title, text=chunk.text)
        for position, chunk in enumerate(chunks)
    )
    _bump_revision(session)
    return AddResult(document=_summary(session, document), status="replaced" if existing is not None else "added")


def list_documents(session: Session) -> list[DocumentSummary]:
    """Every knowledge document, oldest first."""
    counts = dict(
        session.execute(
            select(KnowledgeChunk.document_id, func.count(KnowledgeChunk.id)).group_by(KnowledgeChunk.document_id)
        ).all()
    )
    documents = session.execute(select(KnowledgeDocument).order_by(KnowledgeDocument.id)).scalars().all()
    return [
        DocumentSummary(passages=counts.get(document.id, 0), **document.model_dump(exclude={"source_path"}))
        for document in documents
    ]


def find_document(session: Session, ref: str, *, brand: str | None = None) -> KnowledgeDocument:
    """The document named `ref` (or with id `ref`); NotFoundError / InputError when none or several match."""
    query = select(KnowledgeDocument)
    if ref.isdigit():
        query = query.where((KnowledgeDocument.id == int(ref)) | (KnowledgeDocument.name == ref))
    else:
        query = query.where(KnowledgeDocument.name == ref)
    if brand is not None:
        query = query.where(KnowledgeDocument.brand == clean(brand))
    found = session.execute(query).scalars().all()
    if not found:
        raise NotFoundError(f"no knowledge document '{ref}'; `housestyle knowledge list` shows names and ids")
    if len(found) > 1:
        ids = ", ".join(str(document.id) for document in found)
        raise InputError(f"several knowledge documents are called '{ref}' (ids {ids}); give the id or --brand")
    return found[0]


def remove_document(session: Session, ref: str, *, brand: str | None = None) -> DocumentSummary:
    """Delete one document and its passages; retrieval stops returning them on the next message."""
    document = find_document(session, ref, brand=brand)
    summary = _summary(session, document)
    session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.document_id == document.id))
    session.delete(document)
    session.flush()
    _bump_revision(session)
    return summary


def of_brand(brand: str) -> Any:
    """The SQL condition for one brand's documents and the shared ones: all a brand may see of the knowledge base."""
    return KnowledgeDocument.brand.in_(["", brand])  # type: ignore[attr-defined]


def product_names(session: Session, brand: str | None = None) -> list[str]:
    """The products the knowledge base declares (one brand's and the shared; None: every brand's), oldest first."""
    names: list[str] = []
    query = select(KnowledgeDocument.products).order_by(KnowledgeDocument.id)
    for products in session.execute(query if brand is None else query.where(of_brand(brand))).scalars():
        names += products or []
    return unique(names)
