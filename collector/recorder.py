"""Recording live support traffic: conversations, customer messages, assistant drafts and agents' reviews."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlmodel import Session

from collector.changes import edit_distance, same_text
from collector.errors import ConflictError, InputError, NotFoundError
from collector.models import (
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

# how long one "agent is typing" signal lasts: the console refreshes it every few seconds while the agent types
TYPING_SIGNAL = timedelta(seconds=8)


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
    conversation = Conversation(
        external_id=external_id or uuid.uuid4().hex,
        channel=channel,
        customer_ref=customer_ref,
        mode=mode,
        source=source,
        known_values={k: v for k, v in (known_values or {}).items() if v} or None,
        access_token_hash=access_token_hash,
        brand_id=brand_id,
    )
    session.add(conversation)
    session.flush()
    return conversation


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


_MESSAGES, _DRAFTS = Message.__table__.c, Draft.__table__.c
# Built once on plain table columns: these run for every turn, and building and compiling ORM queries dominated them.
_NEXT_POSITION = select(
    func.coalesce(
        select(func.max(_MESSAGES.position)).where(_MESSAGES.conversation_id == bindparam("conversation_id")).scalar_subquery(),
        -1,
    ),
    func.coalesce(
        select(func.max(_DRAFTS.position))
        .where(_DRAFTS.conversation_id == bindparam("conversation_id"), _DRAFTS.status == DraftStatus.PENDING.value)
        .scalar_subquery(),
        -1,
    ),
)
_MESSAGE_OF_DRAFT = select(_MESSAGES.id).where(_MESSAGES.draft_id == bindparam("draft_id")).limit(1)


def _next_position(session: Session, conversation_id: int) -> int:
    """The slot after the last message or pending draft (a reviewed draft's slot is taken by its message)."""
    return max(session.execute(_NEXT_POSITION, {"conversation_id": conversation_id}).one()) + 1


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
    """Append several turns at once (one round trip for the position, one flush)."""
    conversation = get_conversation(session, conversation_id)
    if conversation.status == ConversationStatus.CLOSED:
        raise ConflictError(f"conversation {conversation_id} is closed; start a new one")
    position = _next_position(session, conversation_id)
    messages = []
    for offset, (role, content) in enumerate(turns):
        if not isinstance(content, str) or not content.strip():
            raise InputError("a message needs non-empty text content")
        messages.append(
            Message(
                conversation_id=conversation_id,
                position=position + offset,
                role=Role(role),
                content=content,
                draft_id=draft_id,
            )
        )
    session.add_all(messages)
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.flush()
    return messages


def transcript(session: Session, conversation_id: int) -> list[Message]:
    """The conversation's turns in order."""
    return list(
        session.exec(  # type: ignore[call-overload]
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.position)
        ).scalars()
    )


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
    conversation = get_conversation(session, conversation_id)
    position = _next_position(session, conversation_id)
    draft = Draft(
        conversation_id=conversation_id,
        position=position,
        content=content,
        prompt=list(prompt) if prompt is not None else None,
        adapter_version=adapter_version,
        latency_ms=latency_ms,
        handoff_reason=handoff_reason,
    )
    session.add(draft)
    session.flush()
    if conversation.mode == ReplyMode.AUTO and handoff_reason is None:
        session.add(
            Message(conversation_id=conversation_id, position=position, role=Role.ASSISTANT, content=content, draft_id=draft.id)
        )
        session.flush()
    return draft


def awaits_agent(draft: Draft, mode: ReplyMode | str) -> bool:
    """Whether the customer waits for an agent on this draft: assist mode, or an auto-mode draft handed over."""
    return draft.status == DraftStatus.PENDING and (ReplyMode(mode) == ReplyMode.ASSIST or draft.handoff_reason is not None)


def get_draft(session: Session, draft_id: int) -> Draft:
    draft = session.get(Draft, draft_id)
    if draft is None:
        raise NotFoundError(f"draft {draft_id} does not exist")
    return draft


def _pending_draft_of(session: Session, draft_id: int, agent_id: str, *, refused: str = "") -> Draft:
    """The draft, row-locked, if it still waits for a decision and no other agent holds a live claim on it."""
    draft = session.get(Draft, draft_id, with_for_update=True)
    if draft is None:
        raise NotFoundError(f"draft {draft_id} does not exist")
    if draft.status == DraftStatus.REVIEWED:
        raise ConflictError(f"draft {draft_id} is already reviewed")
    if draft.claimed_by not in (None, agent_id) and draft.claimed_until and draft.claimed_until > utcnow():
        raise ConflictError(
            f"draft {draft_id} is being reviewed by {draft.claimed_by} until {draft.claimed_until:%H:%M:%S} UTC{refused}"
        )
    return draft


def claim_draft(session: Session, draft_id: int, agent_id: str, *, ttl: timedelta = timedelta(minutes=5)) -> Draft:
    """Reserve a draft for one agent so two agents never review the same one; a stale claim can be taken over."""
    draft = _pending_draft_of(session, draft_id, agent_id)
    draft.claimed_by = agent_id
    draft.claimed_until = utcnow() + ttl
    session.add(draft)
    session.flush()
    return draft


def release_claim(session: Session, draft_id: int, agent_id: str) -> Draft:
    """The agent moved on without deciding: the draft goes back to the queue for everyone at once."""
    draft = _pending_draft_of(session, draft_id, agent_id, refused=f", not {agent_id}; only they can release it")
    draft.claimed_by = draft.claimed_until = draft.typing_until = None
    session.add(draft)
    session.flush()
    return draft


def mark_typing(
    session: Session, draft_id: int, agent_id: str, *, ttl: timedelta, typing_for: timedelta = TYPING_SIGNAL
) -> Draft:
    """The claiming agent is writing: keep their claim and tell the customer for `typing_for` (refresh to extend)."""
    draft = claim_draft(session, draft_id, agent_id, ttl=ttl)
    draft.typing_until = utcnow() + typing_for
    session.add(draft)
    session.flush()
    return draft


def agent_activity(draft: Draft | None, *, now: datetime | None = None) -> str | None:
    """What the customer may know about their pending draft: "typing", "reviewing" (claimed), "waiting", or None."""
    if draft is None or draft.status != DraftStatus.PENDING:
        return None
    now = now or utcnow()
    if draft.typing_until and draft.typing_until > now and draft.claimed_until and draft.claimed_until > now:
        return "typing"
    if draft.claimed_until and draft.claimed_until > now:
        return "reviewing"
    return "waiting"


def conversation_activity(pending: Iterable[Draft], *, now: datetime | None = None) -> str | None:
    """The furthest along of a conversation's pending drafts: typing beats reviewing beats waiting."""
    order = (None, "waiting", "reviewing", "typing")
    return max((agent_activity(draft, now=now) for draft in pending), key=order.index, default=None)


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
    draft = _pending_draft_of(session, draft_id, agent_id)
    if final_text is not None and not final_text.strip():
        final_text = None
    if decision == ReviewDecision.APPROVED:
        final_text = draft.content
    elif decision == ReviewDecision.EDITED:
        if final_text is None:
            raise InputError("an edit needs the final text the agent sent")
        if same_text(draft.content, final_text):
            decision = ReviewDecision.APPROVED
    review = Review(
        draft_id=draft_id,
        decision=decision,
        final_text=final_text,
        agent_id=agent_id,
        reason=reason,
        edit_distance=edit_distance(draft.content, final_text) if final_text is not None else 1.0,
    )
    draft.status = DraftStatus.REVIEWED
    draft.claimed_by = draft.claimed_until = draft.typing_until = None
    session.add_all([review, draft])
    already_sent = session.execute(_MESSAGE_OF_DRAFT, {"draft_id": draft_id}).first()
    if not already_sent and final_text is not None:
        # assist mode: the customer now sees the agent's final text in the draft's slot
        session.add(
            Message(
                conversation_id=draft.conversation_id,
                position=draft.position,
                role=Role.ASSISTANT,
                content=final_text,
                draft_id=draft_id,
            )
        )
    session.flush()
    return review


def pending_drafts(session: Session, *, limit: int = 50, brand_ids: Iterable[int] | None = None) -> list[Draft]:
    """The review queue, oldest first (of the given brands only, when named)."""
    query = select(Draft).where(Draft.status == DraftStatus.PENDING)
    if brand_ids is not None:
        query = query.join(Conversation, Conversation.id == Draft.conversation_id).where(
            Conversation.brand_id.in_(list(brand_ids)))
    return list(
        session.exec(query.order_by(Draft.created_at, Draft.id).limit(limit)).scalars()  # type: ignore[call-overload]
    )


def close_conversation(session: Session, conversation_id: int) -> Conversation:
    conversation = get_conversation(session, conversation_id)
    conversation.status = ConversationStatus.CLOSED
    conversation.updated_at = utcnow()
    session.add(conversation)
    session.flush()
    return conversation
