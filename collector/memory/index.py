"""Answer memory's index: BM25 over one brand's exchanges (their customer text) that grows without a rebuild.

The tokens are the knowledge index's (`collector.knowledge.index.tokenize`: stop words out, Snowball stems), so a
question matches its past twin the way it matches a passage. The scoring is our own few lines rather than bm25s'
because bm25s cannot add a document to a built index, and a review must be retrievable within seconds without
re-indexing 100k exchanges: a built index keeps its postings (CSR by token) and takes new exchanges as a small tail
scored with the same statistics (N, document frequencies and average length over base and tail together), so the
ranking is exactly BM25's over everything it holds. Removals (outdated, superseded) only switch rows off.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collector.knowledge.index import tokenize
from collector.memory.exchanges import StoredExchange

K1, B = 1.5, 0.75  # bm25s' (and Lucene's) defaults, as the knowledge index uses


@dataclass(frozen=True)
class Postings:
    """Token -> (rows, term frequencies) as one CSR: rows[start[t]:start[t + 1]] hold token t."""

    vocab: dict[str, int]
    start: np.ndarray  # int64, len(vocab) + 1
    rows: np.ndarray  # int32
    tfs: np.ndarray  # float32

    @classmethod
    def build(cls, documents: Sequence[Sequence[str]]) -> Postings:
        vocab: dict[str, int] = {}
        token_ids = [[vocab.setdefault(token, len(vocab)) for token in tokens] for tokens in documents]
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
        flat = np.fromiter((t for ids in token_ids for t in ids), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(len(token_ids), dtype=np.int64), lengths)
        # one key per (token, row); np.unique sorts by token then row and counts each pair's occurrences
        keys, counts = np.unique(flat * max(len(token_ids), 1) + rows, return_counts=True)
        tokens = keys // max(len(token_ids), 1)
        start = np.searchsorted(tokens, np.arange(len(vocab) + 1)).astype(np.int64)
        return cls(vocab, start, (keys % max(len(token_ids), 1)).astype(np.int32), counts.astype(np.float32))

    def kept(self, keep: np.ndarray) -> Postings:
        """These postings over the rows where `keep` (bool per row) holds, renumbered in order; tokens no kept row
        has stay in the vocabulary with no rows (a document frequency of 0 scores nothing)."""
        entry_token = np.repeat(np.arange(len(self.vocab), dtype=np.int64), np.diff(self.start))
        wanted = keep[self.rows]
        renumbered = np.cumsum(keep, dtype=np.int64) - 1
        start = np.zeros(len(self.vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(entry_token[wanted], minlength=len(self.vocab)), out=start[1:])
        return Postings(self.vocab, start, renumbered[self.rows[wanted]].astype(np.int32), self.tfs[wanted])

    def of(self, token: str) -> tuple[np.ndarray, np.ndarray] | None:
        t = self.vocab.get(token)
        if t is None:
            return None
        return self.rows[self.start[t] : self.start[t + 1]], self.tfs[self.start[t] : self.start[t + 1]]

    @property
    def nbytes(self) -> int:
        return self.start.nbytes + self.rows.nbytes + self.tfs.nbytes


@dataclass(frozen=True)
class Hit:
    exchange: StoredExchange
    score: float


@dataclass(frozen=True)
class MemoryIndex:
    """One brand's exchanges at one store stamp; immutable, so threads may search it at once (`extended` returns
    a new one)."""

    exchanges: tuple[StoredExchange, ...]
    base: Postings  # over exchanges[:base_rows]
    base_rows: int
    tail: tuple[Counter, ...]  # token counts of exchanges[base_rows:]
    lengths: np.ndarray  # float32 tokens per exchange
    alive: np.ndarray  # bool per exchange: False once outdated or superseded
    stamp: Any = None
    settled: int = 0  # every review up to this id is in (or was not retrievable when read)
    positions: dict[int, int] = field(default_factory=dict)  # review id -> row

    @classmethod
    def build(cls, exchanges: Sequence[StoredExchange], *, stamp: Any = None, settled: int = 0) -> MemoryIndex:
        documents = tokenize([exchange.customer for exchange in exchanges]) if exchanges else []
        lengths = np.array([len(tokens) for tokens in documents], dtype=np.float32)
        return cls(tuple(exchanges), Postings.build(documents), len(exchanges), (), lengths,
                   np.ones(len(exchanges), dtype=bool), stamp, settled,
                   {exchange.review_id: row for row, exchange in enumerate(exchanges)})

    def __len__(self) -> int:
        return int(self.alive.sum())

    @property
    def tail_rows(self) -> int:
        return len(self.tail)

    def extended(self, added: Sequence[StoredExchange], removed: set[int], *, stamp: Any, settled: int) -> MemoryIndex:
        """This index with `added` exchanges (ones it holds already are skipped) and the review ids in `removed`
        switched off."""
        new = [exchange for exchange in added if exchange.review_id not in self.positions]
        documents = tokenize([exchange.customer for exchange in new]) if new else []
        positions = dict(self.positions)
        positions.update({exchange.review_id: len(self.exchanges) + i for i, exchange in enumerate(new)})
        alive = np.concatenate([self.alive, np.ones(len(new), dtype=bool)])
        for review_id in removed:
            if (row := positions.get(review_id)) is not None:
                alive[row] = False
        lengths = np.concatenate([self.lengths, np.array([len(tokens) for tokens in documents], dtype=np.float32)])
        return MemoryIndex((*self.exchanges, *new), self.base, self.base_rows,
                           (*self.tail, *(Counter(tokens) for tokens in documents)), lengths, alive, stamp,
                           settled, positions)

    def without(self, review_ids: set[int], *, stamp: Any) -> MemoryIndex:
        """This index with the exchanges of `review_ids` dropped, texts and postings both (an erasure: they leave the
        process, not only the ranking); the statistics are then those of what is left, as a rebuild's would be."""
        keep = np.ones(len(self.exchanges), dtype=bool)
        for review_id in review_ids:
            if (row := self.positions.get(review_id)) is not None:
                keep[row] = False
        exchanges = tuple(exchange for exchange, kept in zip(self.exchanges, keep, strict=True) if kept)
        return MemoryIndex(exchanges, self.base.kept(keep[: self.base_rows]), int(keep[: self.base_rows].sum()),
                           tuple(counts for counts, kept in zip(self.tail, keep[self.base_rows :], strict=True) if kept),
                           self.lengths[keep], self.alive[keep], stamp, self.settled,
                           {exchange.review_id: row for row, exchange in enumerate(exchanges)})

    def search(self, query: str, *, k: int, min_score: float = 0.0,
               keep: Callable[[StoredExchange], bool] | None = None) -> list[Hit]:
        """The `k` best exchanges for `query` whose BM25 score is above `min_score` (and passing `keep`), ranked by
        BM25 times the share of the query's known words they contain (Lucene's classic coordination factor), ties
        to the newer; a Hit's score is that ranking score.

        Why the factor: support questions differ by a product name that many exchanges share (a low idf) and a
        symptom word; plain BM25 then prefers a short exchange about another product ("My UltraHub is dead.") to a
        longer one about the same product and symptom, and the reply it offers answers the wrong product."""
        total = len(self.exchanges)
        if k <= 0 or total == 0:
            return []
        tokens = set(tokenize([query])[0])
        if not tokens:
            return []
        average = float(self.lengths.mean()) or 1.0
        norm = K1 * (1 - B + B * self.lengths / average)  # per row
        scores = np.zeros(total, dtype=np.float32)
        matched = np.zeros(total, dtype=np.float32)  # distinct query words each row contains
        known = 0  # query words any row contains
        for token in tokens:
            found = self.base.of(token)
            tail = [(self.base_rows + i, counts[token]) for i, counts in enumerate(self.tail) if token in counts]
            df = (0 if found is None else len(found[0])) + len(tail)
            if df == 0:
                continue
            idf = math.log(1 + (total - df + 0.5) / (df + 0.5))
            known += 1
            if found is not None:
                rows, tfs = found
                scores[rows] += idf * tfs * (K1 + 1) / (tfs + norm[rows])
                matched[rows] += 1
            for row, tf in tail:
                scores[row] += idf * tf * (K1 + 1) / (tf + norm[row])
                matched[row] += 1
        eligible = np.flatnonzero((scores > max(min_score, 0.0)) & self.alive)
        scores *= matched / max(known, 1)  # the coordination factor: ranks, after the BM25 floor
        wanted = k if keep is None else 4 * k
        while True:
            candidates = eligible
            if candidates.size > wanted:  # only the best few are sorted (a common word matches half the rows)
                kth = np.partition(scores[candidates], candidates.size - wanted)[candidates.size - wanted]
                above = candidates[scores[candidates] > kth]
                tied = candidates[scores[candidates] == kth]  # in row order: the newest last
                candidates = np.concatenate([above, tied[len(tied) - (wanted - above.size):]])
            # best first; among equal scores the newer exchange (a later row) first
            order = candidates[np.lexsort((-candidates, -scores[candidates]))]
            hits = [Hit(self.exchanges[row], round(float(scores[row]), 4)) for row in order
                    if keep is None or keep(self.exchanges[row])][:k]
            if len(hits) == k or wanted >= eligible.size:
                return hits
            wanted *= 4  # `keep` turned too many away: look further down

    @property
    def nbytes(self) -> int:
        """Rough resident size: postings, per-row arrays and texts."""
        texts = sum(len(e.customer) + len(e.reply) + 120 for e in self.exchanges)  # + object overhead
        tail = sum(64 + 80 * len(counts) for counts in self.tail)
        return self.base.nbytes + self.lengths.nbytes + self.alive.nbytes + texts + tail + 100 * len(self.positions)
