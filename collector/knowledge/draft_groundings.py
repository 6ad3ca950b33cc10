"""What drafts were grounded on: keeping a draft's Grounding, reading drafts' groundings and passages back by id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlmodel import Session

from collector.knowledge.passages import Grounding, Passage
from core.knowledge_models import DraftGrounding, KnowledgeChunk, KnowledgeDocument


def record_grounding(session: Session, draft_id: int, grounding: Grounding) -> None:
    """Keep which passages a draft's prompt carried (nothing is stored for a draft grounded on none)."""
    if grounding.passages:
        session.merge(DraftGrounding(draft_id=draft_id, grounding=grounding.to_record()))
        session.flush()


def groundings_for(session: Session, draft_ids: Iterable[int]) -> dict[int, Grounding]:
    """draft id -> its Grounding (passage texts from the store; "" for passages removed since)."""
    ids = list(draft_ids)
    if not ids:
        return {}
    records = dict(
        session.execute(
            select(DraftGrounding.draft_id, DraftGrounding.grounding).where(DraftGrounding.draft_id.in_(ids))
        ).all()
    )
    chunk_ids = {passage["id"] for record in records.values() for passage in record.get("passages", [])}
    texts = (
        dict(
            session.execute(
                select(KnowledgeChunk.id, KnowledgeChunk.text).where(KnowledgeChunk.id.in_(chunk_ids))
            ).all()
        )
        if chunk_ids
        else {}
    )
    result = {}
    for draft_id, record in records.items():
        grounding = Grounding.from_record(record)
        grounding.passages = [p.model_copy(update={"text": texts.get(p.id, "")}) for p in grounding.passages]
        result[draft_id] = grounding
    return result


def passages_by_id(session: Session, ids: Sequence[int]) -> list[Passage]:
    """The passages with these ids as the store has them now, in the order given; removed ones are left out."""
    if not ids:
        return []
    rows = {
        row[0]: row
        for row in session.execute(
            select(
                KnowledgeChunk.id,
                KnowledgeChunk.document_id,
                KnowledgeDocument.name,
                KnowledgeChunk.title,
                KnowledgeChunk.text,
            )
            .join(KnowledgeDocument, KnowledgeDocument.id == KnowledgeChunk.document_id)
            .where(KnowledgeChunk.id.in_(list(ids)))
        ).all()
    }
    return [
        Passage(id=row[0], document_id=row[1], document=row[2], title=row[3], text=row[4], score=0.0)
        for chunk_id in ids
        if (row := rows.get(chunk_id)) is not None
    ]
