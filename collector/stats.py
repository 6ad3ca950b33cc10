"""Online quality per adapter version, from agents' reviews: the correction rate, acceptance, edits, rejections."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import case, func, or_, select
from sqlmodel import Session

from core.models import Conversation, Draft, Review, ReviewDecision

BASE_LABEL = "base"  # drafts written by the base model alone (no adapter version)
IMPORT_AGENT = "import"  # reviews created by `housestyle import`: history, not live feedback
DRAFT_OUTCOMES = ("pending", "approved", "edited", "rejected")  # what can become of a draft


def correction_rate(edited: int, rejected: int, reviews: int) -> float:
    """THE correction rate: the share of reviewed drafts an agent had to change (edited) or replace (rejected).

    The dashboard, `housestyle stats`, /metrics and the automatic rollback all show and act on this number.
    """
    return (edited + rejected) / reviews if reviews else 0.0


class VersionStats(BaseModel):
    """How agents treated one version's drafts."""

    version: str
    reviews: int
    approved: int
    edited: int
    rejected: int
    mean_edit_distance: float
    pending: int = 0  # drafts still waiting for an agent (only counted when asked for)

    @property
    def acceptance_rate(self) -> float:
        return self.approved / self.reviews if self.reviews else 0.0

    @property
    def edit_rate(self) -> float:
        return self.edited / self.reviews if self.reviews else 0.0

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.reviews if self.reviews else 0.0

    @property
    def corrected(self) -> int:
        """Drafts an agent had to change or replace."""
        return self.edited + self.rejected

    @property
    def correction_rate(self) -> float:
        """See `correction_rate`: edited + rejected over reviews (1 - acceptance)."""
        return correction_rate(self.edited, self.rejected, self.reviews)


def version_stats(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    include_imported: bool = False,
    include_pending: bool = False,
    brand_id: int | None = None,
) -> list[VersionStats]:
    """Review statistics per adapter version, busiest version first.

    By default live feedback only: imported history is left out and `since`/`until` bound when the agent reviewed.
    `include_imported` and `include_pending` count every draft in the store (the admin's totals and the metrics).
    `brand_id`: one brand's drafts only (None: every brand's).
    """
    label = func.coalesce(Draft.adapter_version, BASE_LABEL)

    def count(condition) -> Any:
        return func.sum(case((condition, 1), else_=0))

    query = (
        select(
            label,
            func.count(Review.id),
            count(Review.decision == ReviewDecision.APPROVED),
            count(Review.decision == ReviewDecision.EDITED),
            count(Review.decision == ReviewDecision.REJECTED),
            func.avg(Review.edit_distance),
            count(Review.id.is_(None)),
        )
        .select_from(Draft)
        .join(Review, Review.draft_id == Draft.id, isouter=include_pending)
        .group_by(label)
    )
    if brand_id is not None:
        query = query.join(Conversation, Conversation.id == Draft.conversation_id).where(
            Conversation.brand_id == brand_id)
    if not include_imported:
        query = query.where(or_(Review.id.is_(None), Review.agent_id != IMPORT_AGENT))
    if since is not None:
        query = query.where(Review.created_at >= since)
    if until is not None:
        query = query.where(Review.created_at < until)
    stats = [
        VersionStats(
            version=version,
            reviews=reviews,
            approved=int(approved or 0),
            edited=int(edited or 0),
            rejected=int(rejected or 0),
            mean_edit_distance=float(mean or 0.0),
            pending=int(pending or 0),
        )
        for version, reviews, approved, edited, rejected, mean, pending in session.execute(query).all()
    ]
    return sorted(stats, key=lambda s: -s.reviews)
