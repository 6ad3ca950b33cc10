"""Online quality per adapter version, from agents' reviews: acceptance, edit and rejection rates, edit distance."""

from __future__ import annotations

import math
from datetime import datetime
from statistics import NormalDist
from typing import Any

from pydantic import BaseModel
from sqlalchemy import case, func, or_, select
from sqlmodel import Session

from collector.models import Draft, Review, ReviewDecision

BASE_LABEL = "base"  # drafts written by the base model alone (no adapter version)
IMPORT_AGENT = "import"  # reviews created by `housestyle import`: history, not live feedback


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
    def correction_rate(self) -> float:
        """Share of drafts an agent had to change or replace: 1 - acceptance."""
        return (self.edited + self.rejected) / self.reviews if self.reviews else 0.0


def version_stats(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    include_imported: bool = False,
    include_pending: bool = False,
) -> list[VersionStats]:
    """Review statistics per adapter version, busiest version first.

    By default live feedback only: imported history is left out and `since`/`until` bound when the agent reviewed.
    `include_imported` and `include_pending` count every draft in the store (the admin's totals and the metrics).
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


class RegressionTest(BaseModel):
    """Outcome of the one-sided two-proportion z-test on correction rates (new worse than old by > margin?)."""

    regressed: bool
    enough_reviews: bool
    z: float
    p_value: float
    old_rate: float
    new_rate: float
    reason: str


def correction_rate_regressed(
    old: VersionStats, new: VersionStats, *, margin: float = 0.05, alpha: float = 0.05, min_reviews: int = 30
) -> RegressionTest:
    """Is `new`'s correction rate worse than `old`'s by more than `margin`, at significance `alpha`?

    H0: p_new - p_old <= margin; H1: p_new - p_old > margin. Pooled-variance z statistic, one-sided normal p-value.
    Both versions need `min_reviews` reviews before any verdict.
    """
    enough = old.reviews >= min_reviews and new.reviews >= min_reviews
    p_old, p_new = old.correction_rate, new.correction_rate
    if not enough:
        return RegressionTest(
            regressed=False, enough_reviews=False, z=0.0, p_value=1.0, old_rate=p_old, new_rate=p_new,
            reason=f"not enough reviews yet ({new.reviews} new, {old.reviews} old; need {min_reviews} each)",
        )
    pooled = (old.edited + old.rejected + new.edited + new.rejected) / (old.reviews + new.reviews)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / old.reviews + 1 / new.reviews))
    z = (p_new - p_old - margin) / spread
    p_value = 1 - NormalDist().cdf(z)
    regressed = p_value < alpha
    verdict = "worse" if regressed else "not significantly worse"
    return RegressionTest(
        regressed=regressed, enough_reviews=True, z=z, p_value=p_value, old_rate=p_old, new_rate=p_new,
        reason=(
            f"{new.version} corrected {p_new:.0%} of {new.reviews} drafts vs {p_old:.0%} of {old.reviews} for "
            f"{old.version}: {verdict} by more than {margin:.0%} (one-sided z={z:.2f}, p={p_value:.3f})"
        ),
    )
