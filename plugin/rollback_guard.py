"""Automatic rollback: after a promotion, watch agents' reviews and undo a version that makes them correct more."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import select

from collector.db import session_scope
from collector.models import AdapterEvent
from collector.registry import live_adapter
from collector.settings import Settings
from collector.stats import BASE_LABEL, RegressionTest, VersionStats, correction_rate_regressed, version_stats


class RegressionCheck(BaseModel):
    live: str
    previous: str
    test: RegressionTest


def _empty(version: str) -> VersionStats:
    return VersionStats(version=version, reviews=0, approved=0, edited=0, rejected=0, mean_edit_distance=0.0)


def check_live_regression(settings: Settings, *, url: str | None = None) -> RegressionCheck | None:
    """Compare the live version (reviews since it went live) with the version it replaced; None if nothing to compare.

    The previous version's figures are all reviews of its drafts; the test is `collector.stats.
    correction_rate_regressed` (one-sided two-proportion z-test) with the settings' margin, alpha and minimum counts.
    """
    with session_scope(url) as session:
        live = live_adapter(session)
        if live is None:
            return None
        went_live = session.execute(
            select(AdapterEvent)
            .where(AdapterEvent.version == live.version, AdapterEvent.action.in_(("promote", "rollback")))
            .order_by(AdapterEvent.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if went_live is None or went_live.action == "rollback":
            return None  # a rollback is the fix itself: never auto-undo it
        earlier = session.execute(
            select(AdapterEvent.version)
            .where(AdapterEvent.action.in_(("promote", "rollback")), AdapterEvent.id < went_live.id,
                   AdapterEvent.version != live.version)
            .order_by(AdapterEvent.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        previous = earlier or BASE_LABEL
        new = {s.version: s for s in version_stats(session, since=went_live.created_at)}.get(live.version)
        old = {s.version: s for s in version_stats(session)}.get(previous)
    test = correction_rate_regressed(
        old or _empty(previous), new or _empty(live.version), margin=settings.rollback_margin,
        alpha=settings.rollback_alpha, min_reviews=settings.rollback_min_reviews,
    )
    return RegressionCheck(live=live.version, previous=previous, test=test)
