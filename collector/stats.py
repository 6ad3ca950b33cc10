"""The store's figures, read in one place: what a live review is, correction rates per version and over time, counts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, overload

from pydantic import BaseModel
from sqlalchemy import case, func, or_, select
from sqlmodel import Session

from core.models import Conversation, Draft, Review, ReviewDecision, as_utc

BASE_LABEL = "base"  # drafts written by the base model alone (no adapter version)
IMPORT_AGENT = "import"  # reviews created by `housestyle import`: history, not live feedback
DRAFT_OUTCOMES = ("pending", "approved", "edited", "rejected")  # what can become of a draft
_VERSION = func.coalesce(Draft.adapter_version, BASE_LABEL)  # the version a draft counts under


@overload
def is_live_review(agent_id: str) -> bool: ...
@overload
def is_live_review(agent_id: Any) -> Any: ...
def is_live_review(agent_id: Any) -> Any:
    """THE definition of a live review: an agent's decision on a served draft, not history that came with `housestyle
    import`. Only live reviews count as feedback: the stats, the dashboard, the rollback guard, the refresh trigger.

    Given `Review.agent_id` it is a query's condition; given an agent id already read, a bool: one rule for both."""
    return agent_id != IMPORT_AGENT


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
    def count(condition) -> Any:
        return func.sum(case((condition, 1), else_=0))

    query = (
        select(
            _VERSION,
            func.count(Review.id),
            count(Review.decision == ReviewDecision.APPROVED),
            count(Review.decision == ReviewDecision.EDITED),
            count(Review.decision == ReviewDecision.REJECTED),
            func.avg(Review.edit_distance),
            count(Review.id.is_(None)),
        )
        .select_from(Draft)
        .join(Review, Review.draft_id == Draft.id, isouter=include_pending)
        .group_by(_VERSION)
    )
    if brand_id is not None:
        query = query.join(Conversation, Conversation.id == Draft.conversation_id).where(
            Conversation.brand_id == brand_id)
    if not include_imported:
        query = query.where(or_(Review.id.is_(None), is_live_review(Review.agent_id)))
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


class RatePoint(BaseModel):
    """One version's live reviews in one time bucket."""

    start: datetime
    reviews: int
    approved: int
    edited: int
    rejected: int
    correction_rate: float


def correction_rate_series(
    session: Session, *, since: datetime, until: datetime, bucket: timedelta, brand_id: int
) -> dict[str, list[RatePoint]]:
    """Each version's correction rate over time, from the brand's live reviews in [since, until), bucketed by when the
    agent reviewed (buckets from `since`; a bucket without reviews is left out). Versions sorted, buckets in order."""
    query = (
        select(_VERSION, Review.decision, Review.created_at)
        .join(Draft, Draft.id == Review.draft_id)
        .join(Conversation, Conversation.id == Draft.conversation_id)
        .where(is_live_review(Review.agent_id), Review.created_at >= since, Review.created_at < until,
               Conversation.brand_id == brand_id)
    )
    counts: dict[str, dict[int, dict[ReviewDecision, int]]] = {}
    # bucketing in Python keeps one query that reads the same on SQLite and Postgres
    for version, decision, reviewed_at in session.execute(query):
        index = int((as_utc(reviewed_at) - since) / bucket)
        cell = counts.setdefault(version, {}).setdefault(index, dict.fromkeys(ReviewDecision, 0))
        cell[ReviewDecision(decision)] += 1
    series = {}
    for version, buckets in sorted(counts.items()):
        points = []
        for index, cell in sorted(buckets.items()):
            reviews = sum(cell.values())
            edited, rejected = cell[ReviewDecision.EDITED], cell[ReviewDecision.REJECTED]
            points.append(RatePoint(
                start=since + index * bucket, reviews=reviews, approved=cell[ReviewDecision.APPROVED],
                edited=edited, rejected=rejected, correction_rate=correction_rate(edited, rejected, reviews),
            ))
        series[version] = points
    return series


def reviews_since(session: Session, since: datetime | None, *, brand_id: int) -> int:
    """The brand's live reviews recorded at or after `since` (None: all of them)."""
    query = (select(func.count(Review.id)).join(Draft, Draft.id == Review.draft_id)
             .join(Conversation, Conversation.id == Draft.conversation_id)
             .where(is_live_review(Review.agent_id), Conversation.brand_id == brand_id))
    if since is not None:
        query = query.where(Review.created_at >= since)
    return int(session.execute(query).scalar() or 0)


def conversations_by_channel(session: Session, brand_id: int | None = None) -> dict[str, int]:
    """How many conversations each channel brought, of the brand (None: of every brand), imported history included."""
    query = select(Conversation.channel, func.count(Conversation.id)).group_by(Conversation.channel)
    if brand_id is not None:
        query = query.where(Conversation.brand_id == brand_id)
    return dict(session.execute(query).all())
