"""Automatic rollback: after a promotion, watch agents' reviews and undo a version that makes them correct more.

The decision is a one-sided two-proportion z-test (pooled variance) on the correction rate
(`collector.stats.correction_rate`): H0 "new - old <= margin", rejected when p < alpha once both versions have
enough reviews. Two rules bound what the guard may do: a rollback is never undone automatically, and a first
adapter is never rolled back to the bare base model.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from pydantic import BaseModel

from collector.brands import brand_id_of
from collector.stats import BASE_LABEL, VersionStats, version_stats
from core.db import session_scope
from core.registry import live_adapter, previous_live, went_live
from core.settings import Settings


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
    pooled = (old.corrected + new.corrected) / (old.reviews + new.reviews)
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


class RegressionCheck(BaseModel):
    live: str
    previous: str
    test: RegressionTest

    @property
    def roll_back(self) -> bool:
        """Act only on a significant regression, and never back to the bare base model."""
        return self.test.regressed and self.previous != BASE_LABEL


def _empty(version: str) -> VersionStats:
    return VersionStats(version=version, reviews=0, approved=0, edited=0, rejected=0, mean_edit_distance=0.0)


def check_live_regression(settings: Settings) -> RegressionCheck | None:
    """Compare the live version (reviews since it went live) with the version it replaced; None if nothing to compare.

    None too when the live version came back by a rollback: a rollback is the fix itself, never undone by the guard.
    The previous version's figures are all live reviews of its drafts.
    """
    with session_scope(settings.resolved_database_url) as session:
        brand = brand_id_of(settings, session)
        live = live_adapter(session, brand)
        if live is None:
            return None
        made_live = went_live(session, live.version)
        if made_live is None or made_live.action == "rollback":
            return None
        previous = previous_live(session, live.version, brand) or BASE_LABEL
        since_live = version_stats(session, since=made_live.created_at, brand_id=brand)
        new = {s.version: s for s in since_live}.get(live.version)
        old = {s.version: s for s in version_stats(session, brand_id=brand)}.get(previous)
    test = correction_rate_regressed(
        old or _empty(previous), new or _empty(live.version), margin=settings.rollback_margin,
        alpha=settings.rollback_alpha, min_reviews=settings.rollback_min_reviews,
    )
    return RegressionCheck(live=live.version, previous=previous, test=test)
