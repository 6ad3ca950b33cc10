"""Recording live support traffic: conversations, customer messages, assistant drafts and agents' reviews."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from sqlalchemy import bindparam, func, insert, or_, select, union_all, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from collector.review_queue import reviewable_draft
from collector.rows import forget_loaded, held_or_loaded, loaded, refresh_loaded, with_defaults, writing
from core.changes import edit_distance, same_text
from core.errors import ConflictError, InputError, NotFoundError
from core.models import (
    DEFAULT_BRAND_ID,
    Conversation,
    ConversationStatus,
    Draft,
    DraftStatus,
    Message,
    ReplyMode,
    Review,
    ReviewDecision,
    Role,
    utcnow,
)


def start_conversation(
    session: Session,
    *,
    external_id: str | None = None,
    channel: str = "web",
    customer_ref: str | None = None,
    mode: ReplyMode = ReplyMode.ASSIST,
    source: str = "live",
    known_values: dict[str, str] | None = None,
    access_token_hash: str | None = None,
    brand_id: int = DEFAULT_BRAND_ID,
) -> Conversation:
    """Open a conversation of a brand (default: the default brand); an unknown external id gets a fresh random one.

    `known_values`: what the platform knows of the customer (name, email, phone), redacted exactly wherever it
    appears and used to fill a reply's placeholders.
    """
    values = _insert_conversation(
        writing(session),
        external_id,
        channel=channel,
        customer_ref=customer_ref,
        mode=ReplyMode(mode),
        source=source,
        known_values={k: v for k, v in (known_values or {}).items() if v} or None,
        access_token_hash=access_token_hash,
        brand_id=brand_id,
    )
    return loaded(session, Conversation, values)


def _insert_conversation(connection: Connection, external_id: str | None, **fields: Any) -> dict[str, Any]:
    """A new conversation's row, stored (an unknown external id gets a fresh random one), its id included."""
    values = with_defaults(Conversation, external_id=external_id or uuid.uuid4().hex, **fields)
    values["id"] = connection.execute(_INSERT_CONVERSATION, values).scalar_one()
    return values


def _checked_turns(turns: Iterable[tuple[Role | str, str]]) -> list[tuple[Role, str]]:
    """(role, text) turns with known roles; each needs text."""
    checked = [(Role(role), content) for role, content in turns]
    if any(not isinstance(content, str) or not content.strip() for _, content in checked):
        raise InputError("a message needs non-empty text content")
    return checked


def get_conversation(session: Session, conversation_id: int) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    return conversation


def find_conversation(
    session: Session, channel: str, external_id: str, *, brand_id: int = DEFAULT_BRAND_ID
) -> Conversation | None:
    """The conversation a platform knows by its own id in a brand, if we have seen it."""
    return session.exec(  # type: ignore[call-overload]
        select(Conversation).where(Conversation.channel == channel, Conversation.external_id == external_id,
                                   Conversation.brand_id == brand_id)
    ).scalar_one_or_none()


def conversations_named(session: Session, external_id: str) -> list[Conversation]:
    """Every conversation known by this public id, in any brand and channel (the caller filters what it may see)."""
    return list(session.execute(select(Conversation).where(Conversation.external_id == external_id)).scalars())


def pending_drafts_of(session: Session, conversation_id: int) -> list[Draft]:
    """The drafts of one conversation still waiting for an agent, oldest first."""
    return list(session.execute(
        select(Draft).where(Draft.conversation_id == conversation_id, Draft.status == DraftStatus.PENDING)
        .order_by(Draft.id)
    ).scalars())


def pending_draft(session: Session, conversation_id: int) -> Draft | None:
    """The newest draft of one conversation still waiting for an agent, if any."""
    return session.execute(
        select(Draft).where(Draft.conversation_id == conversation_id, Draft.status == DraftStatus.PENDING)
        .order_by(Draft.id.desc()).limit(1)  # type: ignore[union-attr]
    ).scalar_one_or_none()


# The live path writes with Core statements built once here (building and compiling ORM queries, and the unit of
# work, dominated it): per exchange, 2 statements store the customer's message, 2 or 3 the draft, 3 a review.
_CONVERSATIONS, _MESSAGES, _DRAFTS, _REVIEWS = (model.__table__ for model in (Conversation, Message, Draft, Review))
_INSERT_CONVERSATION = insert(_CONVERSATIONS).returning(_CONVERSATIONS.c.id)
_NEXT_POSITION = select(
    func.coalesce(
        select(func.max(_MESSAGES.c.position))
        .where(_MESSAGES.c.conversation_id == bindparam("conversation_id"))
        .scalar_subquery(),
        -1,
    ),
    func.coalesce(
        select(func.max(_DRAFTS.c.position))
        .where(_DRAFTS.c.conversation_id == bindparam("conversation_id"), _DRAFTS.c.status == DraftStatus.PENDING.value)
        .scalar_subquery(),
        -1,
    ),
)
# the same slot as one SQL expression, for inserts that take it in the statement that writes the row
_SLOTS = union_all(
    select(_MESSAGES.c.position).where(_MESSAGES.c.conversation_id == bindparam("conversation_id")),
    select(_DRAFTS.c.position).where(
        _DRAFTS.c.conversation_id == bindparam("conversation_id"), _DRAFTS.c.status == DraftStatus.PENDING.value
    ),
).subquery()
_NEXT_SLOT = select(func.coalesce(func.max(_SLOTS.c.position), -1) + 1).scalar_subquery()


def _insert_at_next_slot(table):
    """INSERT ... SELECT with every column bound but `position`, which is the next slot: read and written by one
    statement, under the write lock (SQLite) or after the conversation row's lock (Postgres)."""
    columns = [column for column in table.columns if not column.primary_key]
    chosen = [_NEXT_SLOT if column.name == "position" else bindparam(column.name, type_=column.type)
              for column in columns]
    return insert(table).from_select([column.name for column in columns], select(*chosen)).returning(
        table.c.id, table.c.position
    )


_INSERT_MESSAGE_AT_NEXT_SLOT = _insert_at_next_slot(_MESSAGES)
_INSERT_DRAFT_AT_NEXT_SLOT = _insert_at_next_slot(_DRAFTS)
_INSERT_MESSAGES = insert(_MESSAGES).returning(_MESSAGES.c.id, sort_by_parameter_order=True)
_INSERT_MESSAGE = insert(_MESSAGES).returning(_MESSAGES.c.id)
# a new turn: the conversation's write lock (its row lock on Postgres), and it must be open; the row comes back, so
# the caller's `get_conversation` afterwards needs no SELECT
_TOUCH_OPEN_CONVERSATION = (
    update(_CONVERSATIONS)
    .where(_CONVERSATIONS.c.id == bindparam("conversation_id"),
           _CONVERSATIONS.c.status != ConversationStatus.CLOSED.value)
    .values(updated_at=bindparam("now"))
    .returning(*_CONVERSATIONS.c)
)
_MODE_OF_CONVERSATION = (
    select(_CONVERSATIONS.c.mode).where(_CONVERSATIONS.c.id == bindparam("conversation_id")).with_for_update()
)
_TRANSCRIPT_TURNS = (
    select(_MESSAGES.c.role, _MESSAGES.c.content)
    .where(_MESSAGES.c.conversation_id == bindparam("conversation_id"))
    .order_by(_MESSAGES.c.position)
)
# a review takes the draft in the statement that checks it may: pending, and no other agent's live claim on it
_TAKE_DRAFT_FOR_REVIEW = (
    update(_DRAFTS)
    .where(
        _DRAFTS.c.id == bindparam("draft_id"),
        _DRAFTS.c.status == DraftStatus.PENDING.value,
        or_(_DRAFTS.c.claimed_by.is_(None), _DRAFTS.c.claimed_by == bindparam("agent_id"),
            _DRAFTS.c.claimed_until.is_(None), _DRAFTS.c.claimed_until <= bindparam("now")),
    )
    .values(status=DraftStatus.REVIEWED.value, claimed_by=None, claimed_until=None, typing_until=None)
    .returning(_DRAFTS.c.conversation_id, _DRAFTS.c.position, _DRAFTS.c.content)
)
_INSERT_REVIEW = insert(_REVIEWS).returning(_REVIEWS.c.id)
_INSERT_DRAFT = insert(_DRAFTS).returning(_DRAFTS.c.id)
_MESSAGE_COLUMNS = [column for column in _MESSAGES.columns if not column.primary_key]
# the agent's final text joins the transcript unless the draft went out already (auto mode)
_INSERT_UNSENT_REPLY = insert(_MESSAGES).from_select(
    [column.name for column in _MESSAGE_COLUMNS],
    select(*(bindparam(column.name, type_=column.type) for column in _MESSAGE_COLUMNS)).where(
        ~select(_MESSAGES.c.id).where(_MESSAGES.c.draft_id == bindparam("draft_id")).exists()
    ),
)


def _next_position(session: Session, conversation_id: int) -> int:
    """The slot after the last message or pending draft (a reviewed draft's slot is taken by its message)."""
    return max(session.execute(_NEXT_POSITION, {"conversation_id": conversation_id}).one()) + 1


def reopen_idle_closed(session: Session, conversation: Conversation) -> bool:
    """Open again a live conversation `housestyle serve` closed while idle (HOUSESTYLE_CONVERSATION_IDLE_CLOSE_MINUTES)
    when someone writes in it again, so the message is stored, not refused; False: it was not such a conversation."""
    if conversation.status != ConversationStatus.CLOSED or conversation.source != "live":
        return False
    conversation.status, conversation.updated_at = ConversationStatus.OPEN, utcnow()
    session.add(conversation)
    session.flush()
    return True


def _refuse_turn(session: Session, conversation_id: int) -> NoReturn:
    """Why a turn could not be added (the conversation is missing or closed)."""
    forget_loaded(session, Conversation, conversation_id)  # read it afresh: the UPDATE found it missing or closed
    conversation = get_conversation(session, conversation_id)
    if conversation.status == ConversationStatus.CLOSED:
        raise ConflictError(f"conversation {conversation_id} is closed; start a new one")
    raise ConflictError(f"conversation {conversation_id} changed while the message was stored; send it again")


def add_message(
    session: Session, conversation_id: int, role: Role | str, content: str, *, draft_id: int | None = None
) -> Message:
    """Append one turn to a conversation's transcript."""
    return add_messages(session, conversation_id, [(Role(role), content)], draft_id=draft_id)[0]


def add_messages(
    session: Session,
    conversation_id: int,
    turns: Sequence[tuple[Role | str, str]],
    *,
    draft_id: int | None = None,
) -> list[Message]:
    """Append several turns at once: the conversation's lock, then one insert (two statements for one turn)."""
    turns = _checked_turns(turns)
    connection = writing(session)
    now = utcnow()
    touched = connection.execute(_TOUCH_OPEN_CONVERSATION, {"conversation_id": conversation_id, "now": now}).first()
    if touched is None:
        _refuse_turn(session, conversation_id)
    # kept for the caller's `get_conversation` in this session, which then needs no SELECT (the identity map holds
    # unchanged objects only weakly; one slot, so a long session does not keep every conversation it touched)
    session.info["recorder_last_conversation"] = held_or_loaded(session, Conversation, touched._asdict())
    rows = [
        with_defaults(Message, conversation_id=conversation_id, role=role, content=content, draft_id=draft_id,
                      created_at=now)
        for role, content in turns
    ]
    if len(rows) == 1:
        rows[0]["id"], rows[0]["position"] = connection.execute(_INSERT_MESSAGE_AT_NEXT_SLOT, rows[0]).one()
    elif rows:
        position = _next_position(session, conversation_id)
        for offset, row in enumerate(rows):
            row["position"] = position + offset
        for row, (message_id,) in zip(rows, connection.execute(_INSERT_MESSAGES, rows).all()):
            row["id"] = message_id
    return [loaded(session, Message, row) for row in rows]


def transcript(session: Session, conversation_id: int) -> list[Message]:
    """The conversation's turns in order."""
    return list(
        session.exec(  # type: ignore[call-overload]
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.position)
        ).scalars()
    )


def transcript_turns(session: Session, conversation_id: int) -> list[tuple[str, str]]:
    """(role, text) of the conversation's turns in order: what a prompt is built from (no ORM objects)."""
    session.flush()
    return [(str(role), content) for role, content in
            session.connection().execute(_TRANSCRIPT_TURNS, {"conversation_id": conversation_id})]


def record_draft(
    session: Session,
    conversation_id: int,
    content: str,
    *,
    prompt: Iterable[dict] | None = None,
    adapter_version: str | None = None,
    latency_ms: float | None = None,
    handoff_reason: str | None = None,
) -> Draft:
    """Store the assistant's suggestion. In auto mode the customer sees it at once, so it joins the transcript,
    unless it is handed to an agent first (`handoff_reason`: no usable reply, a topic the model has not learned)."""
    connection = writing(session)
    mode = connection.execute(_MODE_OF_CONVERSATION, {"conversation_id": conversation_id}).scalar_one_or_none()
    if mode is None:
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    values = with_defaults(
        Draft,
        conversation_id=conversation_id,
        content=content,
        prompt=list(prompt) if prompt is not None else None,
        adapter_version=adapter_version,
        latency_ms=latency_ms,
        status=DraftStatus.PENDING,
        handoff_reason=handoff_reason,
    )
    values["id"], values["position"] = connection.execute(_INSERT_DRAFT_AT_NEXT_SLOT, values).one()
    draft = loaded(session, Draft, values)
    if mode == ReplyMode.AUTO and handoff_reason is None:
        message = with_defaults(Message, conversation_id=conversation_id, position=draft.position,
                                role=Role.ASSISTANT, content=content, draft_id=draft.id)
        connection.execute(_INSERT_MESSAGE, message)
    return draft


def record_exchange(
    session: Session,
    *,
    turns: Sequence[tuple[Role | str, str]],
    reply: str | None,
    prompt: Iterable[dict] | None = None,
    adapter_version: str | None = None,
    latency_ms: float | None = None,
    external_id: str | None = None,
    channel: str = "api",
    customer_ref: str | None = None,
    source: str = "api",
    brand_id: int = DEFAULT_BRAND_ID,
) -> int | None:
    """A whole auto-mode exchange as a new conversation, as `start_conversation`, `add_messages` and `record_draft`
    would store it (turns at slots 0..n-1, the reply's draft and its sent message at slot n), in 3 statements (2
    without a reply) and no ORM objects: the OpenAI-compatible API records every call this way. The draft's id (None: no reply)."""
    turns = _checked_turns(turns)
    connection = writing(session)
    now = utcnow()
    conversation_id = _insert_conversation(
        connection, external_id, channel=channel, customer_ref=customer_ref, mode=ReplyMode.AUTO, source=source,
        brand_id=brand_id, created_at=now, updated_at=now,
    )["id"]
    messages = [
        with_defaults(Message, conversation_id=conversation_id, position=position, role=role, content=content,
                      created_at=now)
        for position, (role, content) in enumerate(turns)
    ]
    draft_id = None
    if reply and reply.strip():  # the draft first: the sent reply joins the turns' insert with its id
        draft = with_defaults(
            Draft, conversation_id=conversation_id, position=len(turns), content=reply,
            prompt=list(prompt) if prompt is not None else None, adapter_version=adapter_version,
            latency_ms=latency_ms, status=DraftStatus.PENDING,
        )
        draft_id = connection.execute(_INSERT_DRAFT, draft).scalar_one()
        messages.append(with_defaults(
            Message, conversation_id=conversation_id, position=len(turns), role=Role.ASSISTANT, content=reply,
            draft_id=draft_id,
        ))
    if messages:
        connection.execute(_MESSAGES.insert(), messages)
    return draft_id


def record_review(
    session: Session,
    draft_id: int,
    decision: ReviewDecision | str,
    *,
    agent_id: str,
    final_text: str | None = None,
    reason: str | None = None,
) -> Review:
    """Record an agent's decision on a draft; the draft and the final text are both kept.

    approved: the draft goes out unchanged. edited: `final_text` goes out instead. rejected: nothing of the draft
    goes out; `final_text`, if given, is the reply the agent wrote from scratch.
    """
    decision = ReviewDecision(decision)
    if final_text is not None and not final_text.strip():
        final_text = None
    if decision == ReviewDecision.EDITED and final_text is None:
        reviewable_draft(session, draft_id, agent_id)  # a missing or taken draft says so first, as it always did
        raise InputError("an edit needs the final text the agent sent")
    connection = writing(session)
    now = utcnow()
    taken = connection.execute(_TAKE_DRAFT_FOR_REVIEW, {"draft_id": draft_id, "agent_id": agent_id, "now": now}).first()
    if taken is None:
        forget_loaded(session, Draft, draft_id)  # read it afresh to say why
        reviewable_draft(session, draft_id, agent_id)  # raises: missing, reviewed, or claimed by another agent
        raise ConflictError(f"draft {draft_id} changed while it was being reviewed; load it again")
    conversation_id, position, content = taken
    refresh_loaded(session, Draft, draft_id, status=DraftStatus.REVIEWED, claimed_by=None, claimed_until=None,
                   typing_until=None)
    if decision == ReviewDecision.APPROVED:
        final_text = content
    elif decision == ReviewDecision.EDITED and same_text(content, final_text):
        decision = ReviewDecision.APPROVED
    values = with_defaults(
        Review,
        draft_id=draft_id,
        decision=decision,
        final_text=final_text,
        agent_id=agent_id,
        reason=reason,
        edit_distance=edit_distance(content, final_text) if final_text is not None else 1.0,
        created_at=now,
    )
    values["id"] = connection.execute(_INSERT_REVIEW, values).scalar_one()
    if final_text is not None:
        # assist mode: the customer now sees the agent's final text in the draft's slot (auto mode sent it already)
        connection.execute(_INSERT_UNSENT_REPLY, with_defaults(
            Message, conversation_id=conversation_id, position=position, role=Role.ASSISTANT.value,
            content=final_text, draft_id=draft_id, created_at=now,
        ))
    return loaded(session, Review, values)
