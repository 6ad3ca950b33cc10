"""The knowledge index: BM25 (bm25s, offline) over a store's chunks, with a local model's embeddings when configured.

One index per store and process, rebuilt when the store's knowledge revision moves (any add or remove, from any
process): each call costs one small query to read the revision plus the BM25 scoring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import URL, select
from sqlmodel import Session

from collector.knowledge.passages import Passage
from collector.knowledge.store import product_names, revision_reads
from collector.knowledge.topics import ProductMatcher
from core.db import get_engine
from core.knowledge_models import KnowledgeChunk, KnowledgeDocument, KnowledgeRevision
from core.settings import Settings

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


def _index_key(engine_url: URL, embedding_model: str | None) -> str:
    """Which cached index (and revision read) belongs to a store and an embedding model."""
    return engine_url.render_as_string(hide_password=False) + "\x1f" + (embedding_model or "")


def _store_key(session: Session, embedding_model: str | None) -> str:
    return _index_key(session.get_bind().url, embedding_model)


def _url_key(url: str, embedding_model: str | None) -> str:
    return _index_key(get_engine(url).url, embedding_model)  # the engine's URL: what its sessions are bound to


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
    read_at = time.monotonic()  # before the read: a change committed while it runs is not mistaken for older
    # the counter and its time: an index built inside a transaction that later rolled back shares its counter
    # value with the next real change, never its time
    stamp = session.execute(select(KnowledgeRevision.revision, KnowledgeRevision.updated_at)).first() or (0, None)
    index = _indexes.get(key)
    if index is None or index.stamp != tuple(stamp):
        with _indexes_lock:
            index = _indexes.get(key)
            if index is None or index.stamp != tuple(stamp):
                index = _build(session, stamp[0], embedding_model)
                index.stamp = tuple(stamp)
                _indexes[key] = index
    revision_reads[key] = read_at
    return index


def recent_index(url: str, settings: Settings, max_age_s: float) -> KnowledgeIndex | None:
    """The store's index without reading the store, when this process read its revision less than `max_age_s` ago
    (a change made in this process is seen at once: it forgets the reads); else None."""
    key = _url_key(url, settings.knowledge_embedding_model)
    read_at = revision_reads.get(key)
    if read_at is None or time.monotonic() - read_at >= max_age_s:
        return None
    return _indexes.get(key)
