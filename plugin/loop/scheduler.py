"""Inside `housestyle serve`: start refreshes on a timer or after enough new reviews, and roll back regressions.

With several instances on one store, one of them does this at a time: the one holding the store's `scheduler` lease
(`core.locks.Lease`, renewed each tick; another instance takes it over within `LEASE` once the holder stops)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from collector.brands import brand_id_of, brand_settings, every_brand
from collector.stats import reviews_since
from core.db import session_scope
from core.errors import ConflictError
from core.locks import Lease, close_runs_of_gone_holders
from core.models import DEFAULT_BRAND_ID, as_utc, utcnow
from core.runs import close_runs_with, last_started
from core.settings import Settings
from plugin.loop.decision import GatewaySwapper
from plugin.loop.refresh import RefreshOutcome, run_refresh
from plugin.loop.rollback import check_live_regression

log = logging.getLogger("housestyle.scheduler")

CHECK_EVERY_S = 30.0
LEASE_NAME = "scheduler"
LEASE = timedelta(minutes=2)  # renewed every tick (CHECK_EVERY_S): a dead scheduler is replaced within two minutes
STOPPED_MID_REFRESH = "the service stopped mid-refresh"


def reviews_since_last_refresh(url: str, brand_id: int = DEFAULT_BRAND_ID) -> int:
    """Live reviews of the brand recorded since its newest refresh started (all of them if none ever ran)."""
    with session_scope(url) as session:
        return reviews_since(session, last_started(session, "refresh", brand_id), brand_id=brand_id)


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
    """Runs in the service's event loop; refreshes run in worker threads so requests keep flowing.

    Every brand has its own schedule, lock and rollback guard; at most HOUSESTYLE_REFRESH_PARALLEL_BRANDS brands
    refresh at once (default one at a time: training is the machine's heaviest job). Of several instances on one
    store, only the holder of the `scheduler` lease ticks; the others skip each tick after one store query."""

    def __init__(self, settings: Settings, gateway, *, check_every_s: float = CHECK_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.gateway = settings, gateway
        self.lease = Lease(LEASE_NAME, url=settings.resolved_database_url, ttl=LEASE)
        self.check_every_s = check_every_s
        self.clock = clock  # seconds, monotonic; tests pass their own
        self.started_at = clock()
        self.last_refresh: dict[str, float] = {}
        self.running: dict[str, asyncio.Task] = {}
        self.run_ids: dict[str, int] = {}  # brand -> the run row of its refresh in this service, once it exists

    @property
    def busy(self) -> bool:
        return any(not task.done() for task in self.running.values())

    def refreshing(self) -> list[str]:
        return [brand for brand, task in self.running.items() if not task.done()]

    def brands(self) -> list[Settings]:
        """Each brand's settings (blocking)."""
        with session_scope(self.settings.resolved_database_url) as session:
            return every_brand(self.settings, session)

    def brand(self, slug: str | None) -> Settings:
        with session_scope(self.settings.resolved_database_url) as session:
            return brand_settings(self.settings, session, slug)

    def leads(self) -> bool:
        """Whether this instance runs the cluster's refresh triggers and rollback guard now; takes or renews the
        lease (blocking: one store query while another instance holds it)."""
        return self.lease.hold()

    def minutes_since_last_refresh(self, brand: Settings, brand_key: int) -> float:
        """Minutes since the brand's newest refresh: the later of this instance's own (ended) and the newest any
        instance started (the store's run rows: an instance that takes the lease over, or restarts, keeps the
        cluster's interval); since this instance's start when no refresh ever ran."""
        with session_scope(self.settings.resolved_database_url) as session:
            started = as_utc(last_started(session, "refresh", brand_key))
        ago: list[float] = []
        if (own := self.last_refresh.get(brand.brand)) is not None:
            ago.append((self.clock() - own) / 60)
        if started is not None:
            ago.append((utcnow() - started).total_seconds() / 60)
        return min(ago) if ago else (self.clock() - self.started_at) / 60

    def refresh_due(self, brand: Settings) -> str | None:
        url = self.settings.resolved_database_url
        brand_key = brand_id_of(brand)
        return refresh_due(brand, minutes_since_last=self.minutes_since_last_refresh(brand, brand_key),
                           new_reviews=lambda: reviews_since_last_refresh(url, brand_key))

    async def start_refresh(self, reason: str, *, actor: str = "scheduler", brand: str | None = None) -> int:
        """Start a refresh of the brand (default: HOUSESTYLE_BRAND) in the background; returns its run id once it
        holds the lock (ConflictError if it can't)."""
        settings = await asyncio.to_thread(self.brand, brand)
        if settings.brand in self.refreshing():
            raise ConflictError(f"a refresh of brand {settings.brand!r} is already running in this service; watch "
                                "it in /admin/runs")
        if len(self.refreshing()) >= self.settings.refresh_parallel_brands:
            raise ConflictError(f"{len(self.refreshing())} refreshes are running ({', '.join(self.refreshing())}); "
                                "this one starts when they end (HOUSESTYLE_REFRESH_PARALLEL_BRANDS allows more)")
        loop = asyncio.get_running_loop()
        started: asyncio.Future[int] = loop.create_future()

        def on_started(run_id: int) -> None:
            self.run_ids[settings.brand] = run_id  # set before the refresh goes on: shutdown closes what is open
            loop.call_soon_threadsafe(lambda: started.done() or started.set_result(run_id))

        task = asyncio.create_task(self.refresh_now(reason, actor=actor, on_started=on_started, brand=settings))
        self.running[settings.brand] = task
        task.add_done_callback(lambda done: started.done() or _fail_with(started, done))
        return await started

    async def refresh_now(self, reason: str, *, actor: str = "scheduler",
                          on_started: Callable[[int], None] | None = None,
                          brand: Settings | None = None) -> RefreshOutcome:
        settings = brand or await asyncio.to_thread(self.brand, None)
        swapper = GatewaySwapper(self.gateway, asyncio.get_running_loop())
        log.info("refresh of brand %s starting: %s", settings.brand, reason)
        try:
            outcome = await asyncio.to_thread(run_refresh, settings, swapper, actor=actor, on_started=on_started,
                                              vllm=self.gateway.eval_target())
        finally:
            self.last_refresh[settings.brand] = self.clock()
        log.info("refresh run %s (brand %s): %s", outcome.run_id, settings.brand,
                 outcome.model_dump_json(exclude={"gate"}))
        return outcome

    async def guard_live_version(self, brand: Settings | None = None) -> None:
        settings = brand or await asyncio.to_thread(self.brand, None)
        check = await asyncio.to_thread(check_live_regression, settings)
        if check is None or not check.roll_back:
            return
        if not await asyncio.to_thread(self.leads):  # the lease lapsed meanwhile: its new holder judges (and acts)
            log.info("brand %s: not rolling back %s: another instance runs the guard now", settings.brand, check.live)
            return
        log.warning("brand %s: rolling back %s to %s: %s", settings.brand, check.live, check.previous,
                    check.test.reason)
        brand_key = await asyncio.to_thread(brand_id_of, settings)  # known already for settings from the brands
        await self.gateway.rollback(check.previous, actor="auto-rollback", reason=check.test.reason,
                                    brand_id=brand_key)

    async def tick(self) -> None:
        """One round over the brands: guard each live version, then start the refreshes that are due, as many as
        HOUSESTYLE_REFRESH_PARALLEL_BRANDS allows. Nothing unless this instance holds the scheduler lease."""
        if not await asyncio.to_thread(self.leads):
            return
        # rows a dead process left `running` (SIGKILL, a crashed host) close now, not at the next refresh of them
        await asyncio.to_thread(close_runs_of_gone_holders, self.settings.resolved_database_url)
        for brand in await asyncio.to_thread(self.brands):
            try:
                await self.guard_live_version(brand)
                if (brand.brand not in self.refreshing()
                        and len(self.refreshing()) < self.settings.refresh_parallel_brands
                        and (reason := await asyncio.to_thread(self.refresh_due, brand))):
                    await self.start_refresh(reason, brand=brand.brand)
            except ConflictError as exc:
                log.info("refresh of brand %s skipped: %s", brand.brand, exc)

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.check_every_s)
                try:
                    await self.tick()
                except ConflictError as exc:
                    log.info("refresh skipped: %s", exc)
                except Exception:
                    log.exception("the refresh scheduler hit an error; it keeps running")
        finally:
            try:  # stopped (the service shuts down): another instance takes over at its next tick, not in minutes
                self.lease.release()
            except Exception as exc:
                log.warning("could not hand on the scheduler lease: %s", exc)
            self.close_interrupted_runs()

    def close_interrupted_runs(self) -> list[int]:
        """Close the run rows of refreshes still running here (the outer refresh and its inner training), as failed:
        the service stops, and its worker threads die with the process without closing them. Their lock stays:
        a thread may still be working until the process is gone, and the next taker judges it as usual."""
        closed: list[int] = []
        for brand in self.refreshing():
            if (run_id := self.run_ids.get(brand)) is None:
                continue  # still waiting for the lock: no row yet
            try:
                closed += close_runs_with(run_id, reason=STOPPED_MID_REFRESH, url=self.settings.resolved_database_url)
            except Exception as exc:
                log.warning("could not close refresh run %s of brand %s: %s", run_id, brand, exc)
        if closed:
            log.warning("closed refresh run(s) %s as failed: %s", closed, STOPPED_MID_REFRESH)
        return closed


def _fail_with(future: asyncio.Future, task: asyncio.Task) -> None:
    """The refresh task ended before it held the lock: hand its error (e.g. ConflictError) to whoever waits."""
    error = task.exception() if not task.cancelled() else ConflictError("the refresh was cancelled")
    future.set_exception(error or ConflictError("the refresh ended before it started"))
