"""Recall: the brand's past exchanges most like a conversation, for its next reply's prompt (`core.prompts`).

One index per store and brand and process (`index.MemoryIndex`) over the brand's newest
HOUSESTYLE_MEMORY_MAX_EXCHANGES exchanges, brought up to date when the store's stamp moves
(`exchanges.read_stamp`: one query of four primary-key maxima): new reviews are appended and outdated or superseded
ones switched off in place; after an erasure (an audit event) the exchanges whose reviews left the store are
dropped from it, texts and postings; a tail grown past a tenth of the index rebuilds it from the store. So a
forgotten customer's exchanges are gone from the next recall on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlmodel import Session

from collector.knowledge.retrieval import conversation_query
from collector.memory.exchanges import Stamp, StoredExchange, read_exchanges, read_stamp, removed_since, reviews_gone
from collector.memory.index import MemoryIndex
from core import db
from core.db import get_engine
from core.models import Draft, MemoryUse, Message, Review
from core.prompts import render_examples
from core.settings import Settings

MIN_TAIL_REBUILD = 2000  # appended exchanges an index takes before it is rebuilt (or a tenth of it, if more)


class Example(BaseModel):
    """A past exchange offered to a prompt: the customer's turn(s) and the agent's reply, both redacted."""

    model_config = {"frozen": True}

    review_id: int
    conversation_id: int
    customer: str
    reply: str
    score: float


class Recall(BaseModel):
    """What memory offered one reply's prompt."""

    query: str
    examples: list[Example] = Field(default_factory=list)

    @property
    def review_ids(self) -> list[int]:
        return [example.review_id for example in self.examples]


_indexes: dict[tuple[str, int, int], MemoryIndex] = {}  # (store, brand, most exchanges) -> index
_lock = threading.Lock()  # one update per store and brand at a time; searches need no lock
_stamp_reads: dict[str, float] = {}  # store -> when this process last read its stamp


def _store_key(session: Session) -> str:
    return session.get_bind().url.render_as_string(hide_password=False)


def memory_index(session: Session, brand_id: int, *, newest: int) -> MemoryIndex:
    """The brand's index at the store's current stamp: the cached one, extended, or rebuilt from the brand's `newest`
    exchanges (HOUSESTYLE_MEMORY_MAX_EXCHANGES; one grows past it by at most a tenth, or MIN_TAIL_REBUILD, before
    its rebuild drops the oldest)."""
    store = _store_key(session)
    read_at = time.monotonic()  # before the read: a change committed while it runs is not taken for older
    stamp = read_stamp(session)
    key = (store, brand_id, newest)
    index = _indexes.get(key)
    if index is None or index.stamp != stamp:
        with _lock:
            index = _indexes.get(key)
            if index is None or index.stamp != stamp:
                index = _updated(session, brand_id, index, stamp, newest)
                _indexes[key] = index
    _stamp_reads[store] = read_at
    return index


def _updated(session: Session, brand_id: int, index: MemoryIndex | None, stamp: Stamp, newest: int) -> MemoryIndex:
    if index is None or index.tail_rows > max(MIN_TAIL_REBUILD, index.base_rows // 10):
        batch = read_exchanges(session, brand_id, newest=newest)
        built = MemoryIndex.build(batch.exchanges, stamp=stamp, settled=batch.settled)
        return built.extended([], removed_since(session, review_after=0, outdated_after=0), stamp=stamp,
                              settled=batch.settled)
    if index.stamp.audit != stamp.audit:  # an erasure (or a retention purge, which leaves redacted text as it was)
        if gone := reviews_gone(session, index.positions):
            index = index.without(gone, stamp=index.stamp)
    batch = read_exchanges(session, brand_id, after=index.settled)
    removed = removed_since(session, review_after=index.settled, outdated_after=index.stamp.outdated)
    return index.extended(batch.exchanges, removed, stamp=stamp, settled=batch.settled)


def forget_indexes() -> None:
    """Drop every cached index (tests, and a store restored from a backup)."""
    with _lock:
        _indexes.clear()
        _stamp_reads.clear()


def recall(
    store: Session | str,
    turns: Iterable[tuple[str, str]],
    *,
    brand_id: int,
    settings: Settings,
    keep: Callable[[StoredExchange], bool] | None = None,
) -> Recall:
    """The brand's past exchanges most like the conversation's latest customer turns (HOUSESTYLE_MEMORY_EXAMPLES of
    them, scoring above HOUSESTYLE_MEMORY_MIN_SCORE, within HOUSESTYLE_MEMORY_MAX_PROMPT_CHARS); `keep` narrows
    which may be offered (training: the train split only, never the example's own conversation)."""
    query = conversation_query(turns, customer_turns=settings.knowledge_query_turns)
    if settings.memory_examples <= 0 or not query:
        return Recall(query=query)
    if isinstance(store, Session):
        return _recall(memory_index(store, brand_id, newest=settings.memory_max_exchanges), query, settings, keep)
    with db.session_scope(store) as session:
        return _recall(memory_index(session, brand_id, newest=settings.memory_max_exchanges), query, settings, keep)


def recall_from_memory(
    url: str, turns: Iterable[tuple[str, str]], *, brand_id: int, settings: Settings, max_age_s: float
) -> Recall | None:
    """`recall` without a store read, when this process read the store's stamp less than `max_age_s` ago; None
    when it did not (then call `recall`). Cheap enough for the event loop."""
    query = conversation_query(turns, customer_turns=settings.knowledge_query_turns)
    if settings.memory_examples <= 0 or not query:
        return Recall(query=query)
    store = get_engine(url).url.render_as_string(hide_password=False)
    read_at = _stamp_reads.get(store)
    index = _indexes.get((store, brand_id, settings.memory_max_exchanges))
    if read_at is None or index is None or time.monotonic() - read_at >= max_age_s:
        return None
    return _recall(index, query, settings, None)


def recall_in(index: MemoryIndex, turns: Iterable[tuple[str, str]], *, settings: Settings,
              keep: Callable[[StoredExchange], bool] | None = None) -> Recall:
    """`recall` over an index already at hand (evaluation's, built from an export's train split): same query,
    k, score floor and prompt budget."""
    query = conversation_query(turns, customer_turns=settings.knowledge_query_turns)
    if settings.memory_examples <= 0 or not query:
        return Recall(query=query)
    return _recall(index, query, settings, keep)


def _recall(index: MemoryIndex, query: str, settings: Settings,
            keep: Callable[[StoredExchange], bool] | None) -> Recall:
    hits = index.search(query, k=settings.memory_examples, min_score=settings.memory_min_score, keep=keep)
    examples = [Example(review_id=hit.exchange.review_id, conversation_id=hit.exchange.conversation_id,
                        customer=hit.exchange.customer, reply=hit.exchange.reply, score=hit.score) for hit in hits]
    return Recall(query=query, examples=fit_examples(examples, settings.memory_max_prompt_chars))


def training_keep(split_of: Mapping[int, str], conversation_id: int) -> Callable[[StoredExchange], bool]:
    """What a training example may be shown (`recall`'s `keep`): exchanges of train-split conversations only
    (`split_of`: conversation id -> its split, `collector.split`), never one of its own conversation, so the
    held-out split stays held out and no example answers itself."""
    return lambda exchange: (exchange.conversation_id != conversation_id
                             and split_of.get(exchange.conversation_id) == "train")


def fit_examples(examples: Sequence[Example], max_chars: int) -> list[Example]:
    """The leading examples whose rendered block fits in `max_chars` (a first one too long alone is left out:
    half an answer teaches the wrong thing)."""
    kept: list[Example] = []
    for example in examples:
        if len(render_examples([*kept, example])) > max_chars:
            break
        kept.append(example)
    return kept


def record_recall(session: Session, draft_id: int, recall: Recall) -> None:
    """Keep which past exchanges a draft's prompt carried, best first (nothing for none)."""
    for rank, example in enumerate(recall.examples):
        session.merge(MemoryUse(draft_id=draft_id, review_id=example.review_id, rank=rank, score=example.score))
    if recall.examples:
        session.flush()


def recalled_for(session: Session, draft_ids: Iterable[int]) -> dict[int, list[Example]]:
    """draft id -> the past exchanges its prompt carried, best first, with their texts (redacted) as stored now;
    what the console shows under a draft."""
    ids = list(draft_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(MemoryUse.draft_id, MemoryUse.review_id, MemoryUse.score, Draft.conversation_id, Draft.position,
               Review.redacted_final_text)
        .join(Review, Review.id == MemoryUse.review_id).join(Draft, Draft.id == Review.draft_id)
        .where(MemoryUse.draft_id.in_(ids)).order_by(MemoryUse.draft_id, MemoryUse.rank)
    ).all()
    found: dict[int, list[Example]] = {}
    for draft_id, review_id, score, conversation_id, position, reply in rows:
        customer = session.execute(
            select(Message.redacted_content).where(Message.conversation_id == conversation_id,
                                                   Message.position < position, Message.role == "user")
            .order_by(Message.position.desc()).limit(1)
        ).scalar_one_or_none()
        found.setdefault(draft_id, []).append(Example(
            review_id=review_id, conversation_id=conversation_id, customer=customer or "", reply=reply or "",
            score=score))
    return found
