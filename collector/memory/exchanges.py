"""The reviewed exchanges answer memory holds, read from the store's redacted columns only: the customer's turn(s)
and the reply the agent finally sent (an approved draft, the edited text, a rejected draft's replacement)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select
from sqlmodel import Session

from core.models import (
    AuditEvent,
    Conversation,
    Draft,
    MemoryOutdated,
    MemoryUse,
    Message,
    Review,
    ReviewDecision,
    Role,
    WorkerMark,
)

CHUNK = 500  # conversations per IN (...) when reading their turns
TURN_JOINER = "\n\n"


@dataclass(frozen=True)
class StoredExchange:
    """One reviewed exchange as memory holds it; both texts redacted (placeholders such as <PERSON_1> stay)."""

    review_id: int
    conversation_id: int
    customer: str
    reply: str


@dataclass(frozen=True)
class Stamp:
    """What moves when memory's content may have changed: a new review, a redaction pass, an outdated mark, an
    erasure or retention purge (each writes an audit event). Four primary-key maxima: one cheap query per call."""

    review: int
    redacted_at: Any
    outdated: int
    audit: int


def read_stamp(session: Session) -> Stamp:
    row = session.execute(select(
        select(func.max(Review.id)).scalar_subquery(),
        select(func.max(WorkerMark.updated_at)).where(WorkerMark.name.like("redact:%")).scalar_subquery(),
        select(func.max(MemoryOutdated.id)).scalar_subquery(),
        select(func.max(AuditEvent.id)).scalar_subquery(),
    )).one()
    return Stamp(row[0] or 0, row[1], row[2] or 0, row[3] or 0)


@dataclass(frozen=True)
class Batch:
    """Exchanges read after a review id, and how far the read can vouch: reviews above `settled` that were not
    redacted yet are read again next time."""

    exchanges: list[StoredExchange]
    settled: int


def read_exchanges(session: Session, brand_id: int, *, after: int = 0, newest: int | None = None) -> Batch:
    """The brand's exchanges with review id above `after` (the `newest` reviews of them, when given) whose texts are
    redacted (one not redacted yet waits: memory never holds raw text). Outdated and superseded ones are switched
    off by the index (`removed_since`)."""
    reviewed = (select(Review.id, Draft.conversation_id, Draft.position, Review.redacted_final_text, Review.final_text)
                .join(Draft, Draft.id == Review.draft_id).where(Review.id > after, Review.final_text.is_not(None)))
    if newest is None:
        # the reviews since the last read, found by their key: filtered on the brand in SQL, SQLite's planner starts
        # from the brand's conversations and reads every one of them (1.2 s per new review at 1M stored)
        read = session.execute(reviewed.order_by(Review.id)).all()
        ours = _of_brand(session, brand_id, {conversation_id for _, conversation_id, _, _, _ in read})
        reviews = [row for row in read if row[1] in ours]
        top = read[-1][0] if read else after  # other brands' reviews up to it were read and are not ours
    else:
        reviews = session.execute(
            reviewed.join(Conversation, Conversation.id == Draft.conversation_id)
            .where(Conversation.brand_id == brand_id)
            .order_by(Review.id.desc()).limit(newest)
        ).all()[::-1]
        top = reviews[-1][0] if reviews else after
    turns = _turns_of(session, {conversation_id for _, conversation_id, _, _, _ in reviews})
    exchanges: list[StoredExchange] = []
    waiting: list[int] = []
    for review_id, conversation_id, position, reply, raw in reviews:
        customer = _customer_turns(turns.get(conversation_id, []), position)
        if reply is None or customer is None:
            waiting.append(review_id)  # not redacted yet
        elif customer and reply.strip():
            exchanges.append(StoredExchange(review_id, conversation_id, customer, reply))
    return Batch(exchanges, min(waiting) - 1 if waiting else top)


def _of_brand(session: Session, brand_id: int, conversation_ids: Iterable[int]) -> set[int]:
    """Those of `conversation_ids` that belong to the brand."""
    ids = sorted(conversation_ids)
    return {conversation_id for start in range(0, len(ids), CHUNK) for conversation_id in session.execute(
        select(Conversation.id).where(Conversation.id.in_(ids[start : start + CHUNK]),
                                      Conversation.brand_id == brand_id)).scalars()}


def _turns_of(session: Session, conversation_ids: Iterable[int]) -> dict[int, list[tuple[int, str, str | None]]]:
    """conversation id -> its (position, role, redacted text) in order."""
    ids = sorted(conversation_ids)
    found: dict[int, list[tuple[int, str, str | None]]] = {}
    for start in range(0, len(ids), CHUNK):
        for conversation_id, position, role, text in session.execute(
            select(Message.conversation_id, Message.position, Message.role, Message.redacted_content)
            .where(Message.conversation_id.in_(ids[start : start + CHUNK]))
            .order_by(Message.conversation_id, Message.position)
        ).all():
            found.setdefault(conversation_id, []).append((position, str(role), text))
    return found


def _customer_turns(turns: list[tuple[int, str, str | None]], position: int) -> str | None:
    """The customer's turns the reply at `position` answered (after the turn before them that was not theirs),
    joined; None while one of them is not redacted."""
    said: list[str] = []
    for at, role, text in reversed([turn for turn in turns if turn[0] < position]):
        if role != Role.USER.value:
            if said:
                break
            continue  # e.g. a system turn between
        if text is None:
            return None
        said.insert(0, text.strip())
    return TURN_JOINER.join(text for text in said if text)


def superseded_query(after: int = 0) -> Any:
    """Review ids a later correction replaced: the example a draft's prompt leaned on most (rank 0) when an agent
    then edited or replaced that draft (with reviews above `after` only)."""
    return (
        select(MemoryUse.review_id)
        .join(Review, and_(Review.draft_id == MemoryUse.draft_id, Review.id > after))
        .where(MemoryUse.rank == 0, Review.decision.in_([ReviewDecision.EDITED.value, ReviewDecision.REJECTED.value]),
               Review.final_text.is_not(None))
    )


def removed_since(session: Session, *, review_after: int, outdated_after: int) -> set[int]:
    """Review ids that left memory since an index was built: marked outdated, or superseded by a correction."""
    outdated = select(MemoryOutdated.review_id).where(MemoryOutdated.id > outdated_after)
    return set(session.execute(outdated).scalars()) | set(session.execute(superseded_query(review_after)).scalars())


def reviews_gone(session: Session, review_ids: Iterable[int]) -> set[int]:
    """Those of `review_ids` no longer in the store (an erasure deleted them)."""
    ids = sorted(review_ids)
    present = {review_id for start in range(0, len(ids), CHUNK) for review_id in session.execute(
        select(Review.id).where(Review.id.in_(ids[start : start + CHUNK]))).scalars()}
    return set(ids) - present


def exchanges_of_chats(conversations: Iterable[Sequence[Mapping[str, Any]]]) -> list[StoredExchange]:
    """The exchanges of exported chat records (already redacted), as memory would hold them: each assistant turn
    with the customer turns it answered; the record's position stands for the conversation id, the running count
    for the review id. What `housestyle eval` recalls from when an export carries no examples of its own."""
    found: list[StoredExchange] = []
    for conversation_id, messages in enumerate(conversations):
        said: list[str] = []
        for message in messages:
            if message["role"] == Role.USER.value:
                said.append(str(message["content"]).strip())
            elif message["role"] == Role.ASSISTANT.value:
                customer = TURN_JOINER.join(text for text in said if text)
                if customer and str(message["content"]).strip():
                    found.append(StoredExchange(len(found) + 1, conversation_id, customer, str(message["content"])))
                said = []
    return found
