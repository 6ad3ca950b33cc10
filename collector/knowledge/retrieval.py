"""Retrieval from the knowledge base (BM25 through bm25s, offline) and the grounding block a prompt carries.

One index per store and process, rebuilt when the store's knowledge revision moves (any add or remove, from any
process): each call costs one small query to read the revision plus the BM25 scoring. The prompt side is pure:
`grounded_system_prompt` renders passages the same way for training and serving, and `Grounding` is what a draft
records (which passages, with what score, from which revision) so the console can show them and the export can
train on exactly the passages the agent saw.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlmodel import Session

from collector import db
from collector.knowledge.models import DraftGrounding, KnowledgeChunk, KnowledgeDocument, KnowledgeRevision
from collector.knowledge.store import product_names
from collector.knowledge.topics import ProductMatcher
from collector.settings import Settings

KNOWLEDGE_HEADER = "Product information (use it when it answers the customer; never make up facts that are not here):"
CUSTOMER = "user"


class Passage(BaseModel):
    """A retrieved passage: a knowledge chunk with its document and its score for the query (BM25; with an
    embedding model, the reciprocal-rank-fusion score of BM25 and cosine)."""

    model_config = {"frozen": True}

    id: int  # KnowledgeChunk.id
    document_id: int
    document: str  # the document's name (its file name unless given another)
    title: str  # heading path within the document
    text: str
    score: float


class Grounding(BaseModel):
    """What one draft's prompt was grounded on. Stored as JSON without passage texts:

    {"revision": 7, "query": "How long is the MegaGadget battery covered?",
     "passages": [{"id": 12, "document_id": 1, "document": "gadgetcorp_products.md",
                   "title": "MegaGadget › MegaGadget warranty", "score": 7.91}]}
    """

    revision: int  # the knowledge revision retrieval ran against
    query: str
    passages: list[Passage] = Field(default_factory=list)

    @property
    def passage_ids(self) -> list[int]:
        return [passage.id for passage in self.passages]

    def to_record(self) -> dict[str, Any]:
        """The JSON a draft keeps (texts left out: the draft's prompt already holds them, the store has the rest)."""
        return self.model_dump(mode="json", exclude={"passages": {"__all__": {"text"}}})

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Grounding:
        passages = [Passage(text="", **passage) for passage in record.get("passages", [])]
        return cls(revision=record.get("revision", 0), query=record.get("query", ""), passages=passages)


# --- tokens --------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """BM25 tokens: lower case, words of 2+ characters, English stop words out, Snowball (Porter2) stems."""
    import bm25s
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return bm25s.tokenize(
        list(texts), stopwords=list(STOPWORDS_EN_PLUS), stemmer=_stemmer(), return_ids=False, show_progress=False
    )


# --- the index -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    id: int
    document_id: int
    document: str
    brand: str
    title: str
    text: str


class KnowledgeIndex:
    """BM25 over every chunk of one store at one revision; immutable, so threads may search it at once."""

    def __init__(
        self, revision: int, rows: list[_Row], products: list[str], embedding_model: str | None = None
    ) -> None:
        import numpy as np

        self.revision = revision
        self.stamp: tuple = (revision, None)  # (revision, updated_at) of the store when built
        self.rows = rows
        self.embedding_model = embedding_model
        self.matcher = ProductMatcher(products)
        self._ids = np.array([row.id for row in rows], dtype=np.int64)
        self._brands = np.array([row.brand for row in rows], dtype=object)
        self._bm25 = None
        self._vectors = None
        if rows:
            import bm25s

            texts = [self.matcher.canonicalise(f"{row.title}\n{row.text}") for row in rows]
            self._bm25 = bm25s.BM25()
            self._bm25.index(tokenize(texts), show_progress=False)
            if embedding_model:
                from collector.knowledge.dense import encoder

                self._vectors = encoder(embedding_model).encode(texts)

    def __len__(self) -> int:
        return len(self.rows)

    def search(self, query: str, *, k: int, brand: str | None = None, min_score: float = 0.0) -> list[Passage]:
        """The `k` best passages for `query` scoring above `min_score`; ties go to the older passage."""
        import numpy as np

        if self._bm25 is None or k <= 0:
            return []
        query = self.matcher.canonicalise(query)
        allowed = (self._brands == "") | (self._brands == brand) if brand is not None else None
        tokens = [token for token in tokenize([query])[0] if token in self._bm25.vocab_dict]
        ranked: list[tuple[int, float]] = []  # (row, score) best first
        if tokens:
            scores = np.asarray(self._bm25.get_scores(tokens), dtype=np.float64)
            if allowed is not None:
                scores = np.where(allowed, scores, 0.0)
            ranked = self._best(scores, scores > max(min_score, 0.0), k)
        if self._vectors is not None:
            from collector.knowledge.dense import MIN_SIMILARITY, encoder, fuse_rankings

            similarity = self._vectors @ encoder(self.embedding_model).encode([query])[0]
            near = similarity >= MIN_SIMILARITY if allowed is None else (similarity >= MIN_SIMILARITY) & allowed
            dense = self._best(similarity.astype(np.float64), near, k)
            ranked = fuse_rankings([[row for row, _ in ranked], [row for row, _ in dense]], k)
        return [
            Passage(
                id=row.id,
                document_id=row.document_id,
                document=row.document,
                title=row.title,
                text=row.text,
                score=round(float(score), 6 if self._vectors is not None else 4),
            )
            for i, score in ranked
            for row in (self.rows[i],)
        ]

    def _best(self, scores: Any, eligible: Any, k: int) -> list[tuple[int, float]]:
        """The `k` best eligible rows by score, ties to the older passage (lower id)."""
        import numpy as np

        candidates = np.flatnonzero(eligible)
        if candidates.size > k:
            kth = np.partition(scores[candidates], candidates.size - k)[candidates.size - k]
            candidates = candidates[scores[candidates] >= kth]
        best = sorted(candidates.tolist(), key=lambda i: (-scores[i], self._ids[i]))[:k]
        return [(i, float(scores[i])) for i in best]


_indexes: dict[str, KnowledgeIndex] = {}
_indexes_lock = threading.Lock()  # one build per store at a time; searches need no lock


def _store_key(session: Session, embedding_model: str | None) -> str:
    return session.get_bind().url.render_as_string(hide_password=False) + "\x1f" + (embedding_model or "")


def _build(session: Session, revision: int, embedding_model: str | None) -> KnowledgeIndex:
    rows = [
        _Row(*row)
        for row in session.execute(
            select(
                KnowledgeChunk.id,
                KnowledgeChunk.document_id,
                KnowledgeDocument.name,
                KnowledgeDocument.brand,
                KnowledgeChunk.title,
                KnowledgeChunk.text,
            )
            .join(KnowledgeDocument, KnowledgeDocument.id == KnowledgeChunk.document_id)
            .order_by(KnowledgeChunk.id)
        ).all()
    ]
    return KnowledgeIndex(revision, rows, product_names(session), embedding_model)


def knowledge_index(session: Session, settings: Settings) -> KnowledgeIndex:
    """The store's index at its current revision: the cached one, or a new one when the revision moved.

    With HOUSESTYLE_KNOWLEDGE_EMBEDDING_MODEL set, the index also holds that model's passage embeddings.
    """
    embedding_model = settings.knowledge_embedding_model
    key = _store_key(session, embedding_model)
    # the counter and its time: an index built inside a transaction that later rolled back shares its counter
    # value with the next real change, never its time
    stamp = session.execute(select(KnowledgeRevision.revision, KnowledgeRevision.updated_at)).first() or (0, None)
    index = _indexes.get(key)
    if index is not None and index.stamp == tuple(stamp):
        return index
    with _indexes_lock:
        index = _indexes.get(key)
        if index is None or index.stamp != tuple(stamp):
            index = _build(session, stamp[0], embedding_model)
            index.stamp = tuple(stamp)
            _indexes[key] = index
    return index


def retrieve(
    store: Session | str,
    query: str,
    *,
    k: int | None = None,
    brand: str | None = None,
    min_score: float | None = None,
    settings: Settings,
) -> list[Passage]:
    """The best passages for `query`, best first. `store`: an open session or a store URL.

    `k` and `min_score` default to HOUSESTYLE_KNOWLEDGE_TOP_K and HOUSESTYLE_KNOWLEDGE_MIN_SCORE; `brand` limits
    the search to that brand's documents and the shared ones (None: every document).
    """
    k = settings.knowledge_top_k if k is None else k
    min_score = settings.knowledge_min_score if min_score is None else min_score
    if isinstance(store, Session):
        return knowledge_index(store, settings).search(query, k=k, brand=brand, min_score=min_score)
    with db.session_scope(store) as session:
        return knowledge_index(session, settings).search(query, k=k, brand=brand, min_score=min_score)


# --- from a conversation to a grounded prompt --------------------------------------------------------------------------


def conversation_query(turns: Iterable[tuple[str, str]], *, customer_turns: int = 3) -> str:
    """The retrieval query for the next reply: the customer's last `customer_turns` turns, oldest first.

    `turns` are (role, text) as the prompt builder takes them; earlier turns keep the product in the query when the
    latest message is "that didn't help".
    """
    said = [text.strip() for role, text in turns if str(role) == CUSTOMER and text and text.strip()]
    return "\n".join(said[-customer_turns:])


def fit_passages(passages: Sequence[Passage], max_chars: int) -> list[Passage]:
    """The leading passages whose rendered block fits in `max_chars` (always at least the first, cut to fit)."""
    kept: list[Passage] = []
    for passage in passages:
        if len(render_knowledge([*kept, passage])) <= max_chars:
            kept.append(passage)
        elif not kept:
            room = max_chars - len(render_knowledge([passage.model_copy(update={"text": ""})])) - 1
            text = passage.text[: max(room, 0)].rsplit(" ", 1)[0] + "…"
            kept.append(passage.model_copy(update={"text": text}))
            break
        else:
            break
    return kept


def ground(
    store: Session | str,
    turns: Iterable[tuple[str, str]],
    *,
    brand: str | None = None,
    settings: Settings,
) -> Grounding:
    """Retrieve for the next reply of a conversation, within the settings' k, score floor and prompt size.

    Empty (no passages) when HOUSESTYLE_KNOWLEDGE_GROUNDING is off, the knowledge base is empty, or nothing matches.
    """
    query = conversation_query(turns, customer_turns=settings.knowledge_query_turns)
    if not settings.knowledge_grounding or not query:
        return Grounding(revision=0, query=query)

    def run(session: Session) -> Grounding:
        index = knowledge_index(session, settings)
        found = index.search(query, k=settings.knowledge_top_k, brand=brand, min_score=settings.knowledge_min_score)
        return Grounding(
            revision=index.revision, query=query, passages=fit_passages(found, settings.knowledge_max_prompt_chars)
        )

    if isinstance(store, Session):
        return run(store)
    with db.session_scope(store) as session:
        return run(session)


def training_grounding(
    session: Session,
    turns: Sequence[tuple[str, str]],
    *,
    recorded: Grounding | None = None,
    brand: str | None = None,
    settings: Settings,
) -> Grounding:
    """The passages a training example's reply gets: those its draft was served with (`recorded`, texts as the
    store has them now, removed ones left out), else what retrieval finds now (imported history, agents' own
    replies). `turns` end with the customer turn(s) the reply answered.
    """
    if recorded is not None and recorded.passages:
        scores = {passage.id: passage.score for passage in recorded.passages}
        current = passages_by_id(session, recorded.passage_ids)
        return recorded.model_copy(update={"passages": [p.model_copy(update={"score": scores[p.id]}) for p in current]})
    return ground(session, turns, brand=brand, settings=settings)


def render_knowledge(passages: Sequence[Passage]) -> str:
    """The knowledge block of a system prompt: a header and numbered passages; "" for none. Pure and deterministic."""
    if not passages:
        return ""
    items = [f"[{number}] {passage.title}\n{passage.text.strip()}" for number, passage in enumerate(passages, start=1)]
    return KNOWLEDGE_HEADER + "\n\n" + "\n\n".join(items)


def grounded_system_prompt(system_prompt: str, passages: Sequence[Passage]) -> str:
    """The system prompt with the knowledge block after it; exactly `system_prompt` when there are no passages."""
    block = render_knowledge(passages)
    return f"{system_prompt}\n\n{block}" if block else system_prompt


# --- what drafts recorded ----------------------------------------------------------------------------------------------


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
