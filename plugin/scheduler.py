"""Inside `housestyle serve`: start refreshes on a timer or after enough new reviews, and roll back regressions."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import func, select

from collector.db import session_scope
from collector.errors import ConflictError
from collector.models import Review, TrainingRun
from collector.settings import Settings
from collector.stats import BASE_LABEL, IMPORT_AGENT
from plugin.refresh import RefreshOutcome, run_refresh
from plugin.rollback_guard import check_live_regression

log = logging.getLogger("housestyle.scheduler")

CHECK_EVERY_S = 30.0


def reviews_since_last_refresh(url: str | None) -> int:
    """Live reviews recorded since the newest refresh started (all live reviews if none ever ran)."""
    with session_scope(url) as session:
        last = session.execute(
            select(func.max(TrainingRun.started_at)).where(TrainingRun.kind == "refresh")
        ).scalar()
        query = select(func.count(Review.id)).where(Review.agent_id != IMPORT_AGENT)
        if last is not None:
            query = query.where(Review.created_at >= last)
        return int(session.execute(query).scalar() or 0)


class LoopScheduler:
    """Runs in the service's event loop; refreshes run in a worker thread so requests keep flowing."""

    def __init__(self, settings: Settings, gateway, *, url: str | None = None) -> None:
        self.settings, self.gateway, self.url = settings, gateway, url
        self.last_refresh = time.monotonic()
        self.running: asyncio.Task | None = None

    def refresh_due(self) -> str | None:
        """Why a refresh should start now, or None."""
        interval = self.settings.refresh_interval_minutes
        if interval and time.monotonic() - self.last_refresh >= interval * 60:
            return f"{interval:g} minutes passed"
        threshold = self.settings.refresh_min_new_reviews
        if threshold and (count := reviews_since_last_refresh(self.url)) >= threshold:
            return f"{count} new reviews"
        return None

    async def refresh_now(self, reason: str, *, actor: str = "scheduler") -> RefreshOutcome:
        loop = asyncio.get_running_loop()

        def promote(version: str, why: str) -> None:
            # called from the refresh's worker thread: the swap itself runs on the service's loop and gateway
            if self.settings.refresh_canary_share > 0:
                change = self.gateway.canary(version, self.settings.refresh_canary_share, actor=actor, reason=why)
            else:
                change = self.gateway.promote(version, actor=actor, reason=why)
            asyncio.run_coroutine_threadsafe(change, loop).result()

        log.info("refresh starting: %s", reason)
        try:
            outcome = await asyncio.to_thread(run_refresh, promote=promote, actor=actor, settings=self.settings,
                                              url=self.url)
        finally:
            self.last_refresh = time.monotonic()
        log.info("refresh run %s: %s", outcome.run_id, outcome.model_dump_json(exclude={"gate"}))
        return outcome

    async def guard_live_version(self) -> None:
        check = await asyncio.to_thread(check_live_regression, self.settings, url=self.url)
        if check is None or not check.test.regressed or check.previous == BASE_LABEL:
            return
        log.warning("rolling back %s to %s: %s", check.live, check.previous, check.test.reason)
        await self.gateway.rollback(check.previous, actor="auto-rollback", reason=check.test.reason)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            try:
                if self.gateway is not None:
                    await self.guard_live_version()
                if (self.running is None or self.running.done()) and (reason := self.refresh_due()):
                    self.running = asyncio.create_task(self.refresh_now(reason))
            except ConflictError as exc:
                log.info("refresh skipped: %s", exc)
            except Exception:
                log.exception("the refresh scheduler hit an error; it keeps running")
