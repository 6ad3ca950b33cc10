"""The review queue: drafts waiting for an agent, claims on them, the typing signal, and what the customer sees."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session

from core.errors import ConflictError, NotFoundError
from core.models import Conversation, Draft, DraftStatus, ReplyMode, utcnow

# how long one "agent is typing" signal lasts: the console refreshes it every few seconds while the agent types
TYPING_SIGNAL = timedelta(seconds=8)


def awaits_agent(draft: Draft, mode: ReplyMode | str) -> bool:
    """Whether the customer waits for an agent on this draft: assist mode, or an auto-mode draft handed over."""
    return draft.status == DraftStatus.PENDING and (ReplyMode(mode) == ReplyMode.ASSIST or draft.handoff_reason is not None)


def get_draft(session: Session, draft_id: int) -> Draft:
    draft = session.get(Draft, draft_id)
    if draft is None:
        raise NotFoundError(f"draft {draft_id} does not exist")
    return draft


def pending_drafts(session: Session, *, limit: int = 50, brand_ids: Iterable[int] | None = None) -> list[Draft]:
    """The review queue, oldest first (of the given brands only, when named)."""
    query = select(Draft).where(Draft.status == DraftStatus.PENDING)
    if brand_ids is not None:
        query = query.join(Conversation, Conversation.id == Draft.conversation_id).where(
            Conversation.brand_id.in_(list(brand_ids)))
    return list(
        session.exec(query.order_by(Draft.created_at, Draft.id).limit(limit)).scalars()  # type: ignore[call-overload]
    )


def reviewable_draft(session: Session, draft_id: int, agent_id: str, *, refused: str = "") -> Draft:
    """The draft, row-locked, if it still waits for a decision and no other agent holds a live claim on it; else the
    NotFoundError or ConflictError that says why (`refused`: added to the message about another agent's claim)."""
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
    draft = reviewable_draft(session, draft_id, agent_id)
    draft.claimed_by = agent_id
    draft.claimed_until = utcnow() + ttl
    session.add(draft)
    session.flush()
    return draft


def release_claim(session: Session, draft_id: int, agent_id: str) -> Draft:
    """The agent moved on without deciding: the draft goes back to the queue for everyone at once."""
    draft = reviewable_draft(session, draft_id, agent_id, refused=f", not {agent_id}; only they can release it")
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
