"""Inside `housestyle serve`: start refreshes on a timer or after enough new reviews, and roll back regressions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy import func, select

from collector.db import session_scope
from collector.errors import ConflictError
from collector.models import Review, TrainingRun
from collector.settings import Settings
from collector.stats import IMPORT_AGENT
from plugin.loop.decision import GatewaySwapper
from plugin.loop.refresh import RefreshOutcome, run_refresh
from plugin.loop.rollback import check_live_regression

log = logging.getLogger("housestyle.scheduler")

CHECK_EVERY_S = 30.0


def reviews_since_last_refresh(url: str) -> int:
    """Live reviews recorded since the newest refresh started (all live reviews if none ever ran)."""
    with session_scope(url) as session:
        last = session.execute(
            select(func.max(TrainingRun.started_at)).where(TrainingRun.kind == "refresh")
        ).scalar()
        query = select(func.count(Review.id)).where(Review.agent_id != IMPORT_AGENT)
        if last is not None:
            query = query.where(Review.created_at >= last)
        return int(session.execute(query).scalar() or 0)


def refresh_due(settings: Settings, *, minutes_since_last: float, new_reviews: Callable[[], int]) -> str | None:
    """Why a refresh should start now (the interval passed, or enough new reviews arrived), or None."""
    interval = settings.refresh_interval_minutes
    if interval and minutes_since_last >= interval:
        return f"{interval:g} minutes passed"
    threshold = settings.refresh_min_new_reviews
    if threshold and (count := new_reviews()) >= threshold:
        return f"{count} new reviews"
    return None


class LoopScheduler:
    """Runs in the service's event loop; refreshes run in a worker thread so requests keep flowing."""

    def __init__(self, settings: Settings, gateway, *, check_every_s: float = CHECK_EVERY_S) -> None:
        self.settings, self.gateway = settings, gateway
        self.check_every_s = check_every_s
        self.last_refresh = time.monotonic()
        self.running: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        return self.running is not None and not self.running.done()

    def refresh_due(self) -> str | None:
        url = self.settings.resolved_database_url
        return refresh_due(self.settings, minutes_since_last=(time.monotonic() - self.last_refresh) / 60,
                           new_reviews=lambda: reviews_since_last_refresh(url))

    async def start_refresh(self, reason: str, *, actor: str = "scheduler") -> int:
        """Start a refresh in the background; returns its run id once it holds the lock (ConflictError if it can't)."""
        if self.busy:
            raise ConflictError("a refresh is already running in this service; watch it in /admin/runs")
        loop = asyncio.get_running_loop()
        started: asyncio.Future[int] = loop.create_future()

        def on_started(run_id: int) -> None:
            loop.call_soon_threadsafe(lambda: started.done() or started.set_result(run_id))

        self.running = asyncio.create_task(self.refresh_now(reason, actor=actor, on_started=on_started))
        self.running.add_done_callback(lambda task: started.done() or _fail_with(started, task))
        return await started

    async def refresh_now(self, reason: str, *, actor: str = "scheduler",
                          on_started: Callable[[int], None] | None = None) -> RefreshOutcome:
        swapper = GatewaySwapper(self.gateway, asyncio.get_running_loop())
        log.info("refresh starting: %s", reason)
        try:
            outcome = await asyncio.to_thread(run_refresh, self.settings, swapper, actor=actor, on_started=on_started,
                                              vllm=self.gateway.eval_target())
        finally:
            self.last_refresh = time.monotonic()
        log.info("refresh run %s: %s", outcome.run_id, outcome.model_dump_json(exclude={"gate"}))
        return outcome

    async def guard_live_version(self) -> None:
        check = await asyncio.to_thread(check_live_regression, self.settings)
        if check is None or not check.roll_back:
            return
        log.warning("rolling back %s to %s: %s", check.live, check.previous, check.test.reason)
        await self.gateway.rollback(check.previous, actor="auto-rollback", reason=check.test.reason)

    async def tick(self) -> None:
        """One round: guard the live version, then start a refresh if one is due and none is running."""
        await self.guard_live_version()
        if not self.busy and (reason := await asyncio.to_thread(self.refresh_due)):
            await self.start_refresh(reason)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.check_every_s)
            try:
                await self.tick()
            except ConflictError as exc:
                log.info("refresh skipped: %s", exc)
            except Exception:
                log.exception("the refresh scheduler hit an error; it keeps running")


def _fail_with(future: asyncio.Future, task: asyncio.Task) -> None:
    """The refresh task ended before it held the lock: hand its error (e.g. ConflictError) to whoever waits."""
    error = task.exception() if not task.cancelled() else ConflictError("the refresh was cancelled")
    future.set_exception(error or ConflictError("the refresh ended before it started"))
