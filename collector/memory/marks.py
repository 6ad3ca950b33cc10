"""Marking a past exchange outdated: it is never offered as an example again (its review stays, for training)."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session

from core.errors import NotFoundError
from core.models import Conversation, Draft, MemoryOutdated, Review


def mark_outdated(session: Session, review_id: int, *, actor: str, brand_id: int | None = None) -> bool:
    """Mark the exchange of this review outdated (False: it was already); `brand_id`: refuse another brand's as
    missing."""
    owner = session.execute(
        select(Conversation.brand_id).join(Draft, Draft.conversation_id == Conversation.id)
        .join(Review, Review.draft_id == Draft.id).where(Review.id == review_id)
    ).scalar_one_or_none()
    if owner is None or (brand_id is not None and owner != brand_id):
        raise NotFoundError(f"review {review_id} does not exist")
    if session.execute(select(MemoryOutdated.id).where(MemoryOutdated.review_id == review_id)).first():
        return False
    session.add(MemoryOutdated(review_id=review_id, actor=actor))
    session.flush()
    return True
