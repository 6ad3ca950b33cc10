"""Redacting the store, off the hot path: each conversation with new text is redacted whole, the result kept beside
the raw text, so export reads only redacted text and the live recorder does no extra work.

The redaction worker inside `housestyle serve` (and `housestyle redact`, and `housestyle import`) calls
`redact_pending` in a loop. New text is found by id watermarks (`WorkerMark` rows, one per table: messages, drafts
and reviews only ever get new ids), so a pass reads only what arrived since the last one; `sweep` also looks for
any row still unredacted (a row whose id committed after a higher one, on Postgres) and is run now and then.
A conversation is always redacted whole, in reading order, so one value gets one placeholder across its turns and
the agents' replies ("your username is <USERNAME_1>"), and the platform's known values are redacted exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import bindparam, func, select, union, update

from collector.pii.entities import KnownValues
from core.db import session_scope
from core.models import Conversation, Draft, Message, Review, WorkerMark, utcnow
from core.settings import Settings

MARKS = {"redact:message": Message, "redact:draft": Draft, "redact:review": Review}
SWEEP_LIMIT = 500  # conversations one sweep (the full scan) redacts
if TYPE_CHECKING:
    from collector.pii.conversation import ConversationRedactor

_build_lock = threading.Lock()
# a redactor, or what builds one when the first conversation needs it (loading spaCy takes seconds: idle passes skip
# it, and so does importing this module: the engine is imported only when a redactor is built)
Redactor = Any  # ConversationRedactor | Callable[[], ConversationRedactor]


class RedactionPass(BaseModel):
    """What one pass did."""

    conversations: int = 0
    texts: int = 0  # message, draft and final texts written

    def __add__(self, other: RedactionPass) -> RedactionPass:
        return RedactionPass(conversations=self.conversations + other.conversations, texts=self.texts + other.texts)


@lru_cache(maxsize=4)
def _redactor(config: Any) -> ConversationRedactor:
    from collector.pii.conversation import ConversationRedactor

    return ConversationRedactor(config)


def redactor_for(settings: Settings) -> ConversationRedactor:
    """This process's redactor for these settings (built once: it loads spaCy, a few seconds)."""
    from collector.pii.conversation import RedactorConfig

    with _build_lock:
        return _redactor(RedactorConfig.from_settings(settings))


def _conversations_with_new_text(session, marks: dict[str, int]) -> tuple[list[int], dict[str, int]]:
    """The conversation ids with rows above the watermarks, and the watermarks to move to once they are redacted."""
    ids: set[int] = set()
    heads: dict[str, int] = {}
    for name, table in MARKS.items():
        head = session.execute(select(func.max(table.id))).scalar() or 0
        heads[name] = head
        if head <= marks.get(name, 0):
            continue
        if table is Review:
            query = select(Draft.conversation_id).join(Review, Review.draft_id == Draft.id).where(
                Review.id > marks.get(name, 0), Review.id <= head)
        else:
            query = select(table.conversation_id).where(table.id > marks.get(name, 0), table.id <= head)
        ids.update(session.execute(query.distinct()).scalars())
    return sorted(ids), heads


def redact_conversations(session, redactor: Redactor, conversation_ids: Iterable[int]) -> RedactionPass:
    """Redact these conversations whole and store every redacted text and the placeholder table (one transaction).

    Everything is read and redacted first and written at the end: on SQLite the first write takes the store's one
    write lock until the commit, and holding it through seconds of NLP made every customer's message wait for it.
    """
    done = RedactionPass()
    read = []  # (conversation, its message rows, its draft and review rows, its turns in reading order)
    for conversation_id in conversation_ids:
        conversation = session.get(Conversation, conversation_id)
        if conversation is None:
            continue
        messages = session.execute(select(Message.id, Message.role, Message.content).where(
            Message.conversation_id == conversation_id).order_by(Message.position)).all()
        drafts = session.execute(select(Draft.id, Draft.content, Review.id, Review.final_text).outerjoin(
            Review, Review.draft_id == Draft.id).where(Draft.conversation_id == conversation_id).order_by(
            Draft.position, Draft.id)).all()
        # reading order: the transcript first, then what only drafts and reviews hold
        turns = [(str(role), content) for _, role, content in messages]
        turns += [("assistant", content) for _, content, _, _ in drafts]
        turns += [("assistant", final) for _, _, _, final in drafts]
        read.append((conversation, messages, drafts, turns))
    if not read:
        return done
    if not hasattr(redactor, "redact_conversation"):
        redactor = redactor()  # built only once there is work (loading spaCy takes seconds)
    # spaCy over many conversations' texts at once: the same results, less time a text
    results = redactor.redact_conversations(
        (turns, KnownValues.from_stored(conversation.known_values)) for conversation, _, _, turns in read)
    writes: dict[Any, list[dict]] = {Message: [], Draft: [], Review: []}
    placeholders: list[tuple[Conversation, dict | None]] = []
    for (conversation, messages, drafts, _), result in zip(read, results, strict=True):
        texts = iter(result.texts)
        message_rows = [{"row": row_id, "text": next(texts)} for row_id, _, _ in messages]
        draft_rows = [{"row": draft_id, "text": next(texts)} for draft_id, _, _, _ in drafts]
        review_rows = [{"row": review_id, "text": next(texts)} for _, _, review_id, _ in drafts]
        writes[Message] += message_rows
        writes[Draft] += draft_rows
        writes[Review] += [r for r in review_rows if r["row"] is not None]
        placeholders.append((conversation, result.placeholders or None))
        done += RedactionPass(conversations=1, texts=len(message_rows) + len(draft_rows) + len(review_rows))
    for table, column in ((Message, "redacted_content"), (Draft, "redacted_content"), (Review, "redacted_final_text")):
        if writes[table]:  # Core executemany on the table: one statement for all rows, no ORM bookkeeping
            core = table.__table__
            session.execute(update(core).where(core.c.id == bindparam("row")).values({column: bindparam("text")}),
                            writes[table])
    for conversation, table in placeholders:
        conversation.placeholders = table
        session.add(conversation)
    return done


def redact_pending(url: str, redactor: Redactor, *, chunk: int = 200, on_chunk=None) -> RedactionPass:
    """One pass: redact every conversation that got new text since the last pass, `chunk` conversations per
    transaction, then move the marks (a pass cut short is simply done again: redacting twice gives the same text)."""
    with session_scope(url) as session:
        marks = {row.name: row.position for row in session.execute(select(WorkerMark)).scalars()}
        ids, heads = _conversations_with_new_text(session, marks)
    done = RedactionPass()
    for start in range(0, len(ids), chunk):
        with session_scope(url) as session:
            step = redact_conversations(session, redactor, ids[start:start + chunk])
        done += step
        if on_chunk is not None:
            on_chunk(step)
    with session_scope(url) as session:
        for name, head in heads.items():
            if head > marks.get(name, 0):
                session.merge(WorkerMark(name=name, position=head, updated_at=utcnow()))
    return done


def unredacted_conversations(session, *, limit: int = SWEEP_LIMIT) -> list[int]:
    """Conversations with a text not redacted yet, whatever the watermarks say (a full scan: run it now and then)."""
    query = union(
        select(Message.conversation_id).where(Message.redacted_content.is_(None)),
        select(Draft.conversation_id).where(Draft.redacted_content.is_(None)),
        select(Draft.conversation_id).join(Review, Review.draft_id == Draft.id)
        .where(Review.redacted_final_text.is_(None), Review.final_text.is_not(None)),
    )
    return sorted(session.execute(query.limit(limit)).scalars())


def sweep(url: str, redactor: Redactor, *, limit: int = SWEEP_LIMIT) -> RedactionPass:
    """Redact any conversation that still has unredacted text (the safety net behind the watermarks)."""
    with session_scope(url) as session:
        return redact_conversations(session, redactor, unredacted_conversations(session, limit=limit))


def redact_everything(url: str, redactor: Redactor, *, on_pass=None) -> RedactionPass:
    """Passes until nothing is left (back-fills: `housestyle redact`, imports); `on_pass(pass)` after each."""
    if not hasattr(redactor, "redact_conversation"):
        redactor = redactor_once(redactor)
    total = redact_pending(url, redactor, on_chunk=on_pass)
    while (done := sweep(url, redactor)).conversations:  # rows the watermarks could not vouch for
        total += done
        if on_pass is not None:
            on_pass(done)
        if done.conversations < SWEEP_LIMIT:
            break  # the scan found fewer than it may take: nothing was left behind it
    return total


def redactor_once(build: Callable[[], ConversationRedactor]) -> Callable[[], ConversationRedactor]:
    """`build`, called at most once however often the result is asked for."""
    built: list[ConversationRedactor] = []
    return lambda: built[0] if built else built.append(build()) or built[0]
