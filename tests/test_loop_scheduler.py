"""The scheduler inside `housestyle serve` over two brands, on a clock the test moves: which brand's refresh starts,
the interval's minutes, HOUSESTYLE_REFRESH_PARALLEL_BRANDS, and the rollback guard of each brand on its own lineage.

No real time passes: the scheduler reads the injected clock, the refresh itself is a stand-in that holds until the
test lets it finish, and the guard's decisions come from a real store. Each docstring names the one-line change to
the product code it catches (`tests/mutations.py` checks that it does).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from collector.brands import brand_settings
from collector.stats import BASE_LABEL
from core.db import open_store, session_scope
from core.errors import ConflictError
from core.models import DEFAULT_BRAND_ID, AdapterStatus, Brand, RunStatus
from core.registry import register_adapter, set_status
from core.runs import RunLog
from core.settings import Settings, get_settings
from plugin.loop import scheduler as scheduler_module
from plugin.loop.refresh import RefreshOutcome
from plugin.loop.rollback import check_live_regression
from plugin.loop.scheduler import LoopScheduler, reviews_since_last_refresh
from tests.fixtures.stores import replay_reviews

MINUTE = 60.0


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * MINUTE


class FakeGateway:
    def __init__(self) -> None:
        self.rollbacks: list[tuple[str, int, str]] = []

    def eval_target(self) -> None:
        return None

    async def rollback(self, version: str, *, actor: str, reason: str, brand_id: int) -> None:
        self.rollbacks.append((version, brand_id, actor))


class TwoBrands:
    """A scheduler over the brands "default" and "business" (interval 60 minutes each) whose refreshes are stand-ins:
    each one reports its run id, then holds its worker thread until `finish(brand)`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, parallel: int) -> None:
        self.clock = Clock()
        base = Settings(refresh_interval_minutes=60, refresh_min_new_reviews=None, refresh_parallel_brands=parallel)
        self.settings = {slug: base.model_copy(update={"brand": slug}).with_brand_id(brand_id)
                         for slug, brand_id in (("default", DEFAULT_BRAND_ID), ("business", 2))}
        self.started: list[str] = []
        self.release = {slug: threading.Event() for slug in self.settings}
        open_store(base.resolved_database_url)  # no refresh recorded: each interval counts from the start
        self.scheduler = LoopScheduler(base, FakeGateway(), check_every_s=0, clock=self.clock)
        self.scheduler.brands = lambda: list(self.settings.values())
        self.scheduler.brand = lambda slug: self.settings[slug or "default"]
        self.scheduler.leads = lambda: True  # the only instance (several on one store: tests/test_cluster_jobs.py)

        async def no_regression(brand: Settings | None = None) -> None:
            return None

        self.scheduler.guard_live_version = no_regression

        def stand_in_refresh(settings: Settings, swapper, *, actor, on_started, vllm) -> RefreshOutcome:
            self.started.append(settings.brand)
            on_started(len(self.started))
            assert self.release[settings.brand].wait(60), "the test never let the refresh finish"
            return RefreshOutcome(run_id=len(self.started), status=RunStatus.SUCCEEDED)

        monkeypatch.setattr(scheduler_module, "run_refresh", stand_in_refresh)

    async def finish(self, slug: str) -> None:
        self.release[slug].set()
        await self.scheduler.running[slug]

    def run(self, scenario) -> None:
        """Run the scenario; whatever happens, let every stand-in refresh end (a failed assertion must not leave a
        worker thread holding the event loop's shutdown for a minute)."""
        async def guarded() -> None:
            try:
                await scenario()
            finally:
                for event in self.release.values():
                    event.set()

        asyncio.run(guarded())


def test_only_the_due_brand_starts_and_the_interval_is_minutes_59_no_61_yes(
    monkeypatch: pytest.MonkeyPatch, housestyle_home: Path
) -> None:
    """Catches `(self.clock() - last) / 60` -> `/ 3600` or `/ 30` (seconds to minutes) in LoopScheduler.refresh_due,
    `self.last_refresh.get(brand.brand, ...)` read for the wrong brand, and `brand.brand not in self.refreshing()`
    dropped from tick."""
    loop = TwoBrands(monkeypatch, parallel=2)
    scheduler = loop.scheduler

    async def scenario() -> None:
        scheduler.last_refresh["business"] = loop.clock() + 2 * MINUTE  # business last refreshed 2 minutes later
        loop.clock.advance(59)
        await scheduler.tick()  # default 59 minutes, business 57: neither
        assert loop.started == []
        loop.clock.advance(2)
        await scheduler.tick()  # default 61 minutes: due; business 59: not yet
        assert loop.started == ["default"] and scheduler.refreshing() == ["default"]
        await scheduler.tick()  # default is running: not started twice
        assert loop.started == ["default"]
        loop.clock.advance(2)
        await scheduler.tick()  # business 61 minutes: due, and two brands may refresh at once
        assert loop.started == ["default", "business"]
        await loop.finish("default")
        await loop.finish("business")
        assert scheduler.last_refresh == {"default": loop.clock(), "business": loop.clock()}
        assert not scheduler.busy
        await scheduler.tick()  # both just refreshed: neither is due
        assert loop.started == ["default", "business"]

    loop.run(scenario)


def test_one_brand_at_a_time_skips_a_second_due_brand_until_the_first_ends(
    monkeypatch: pytest.MonkeyPatch, housestyle_home: Path
) -> None:
    """Catches `len(self.refreshing()) >= self.settings.refresh_parallel_brands` -> `>` in start_refresh (the admin's
    POST /admin/refresh of another brand would start a second training), and `self.last_refresh[...] =
    self.clock()` dropped from refresh_now (the first brand would start again at once)."""
    loop = TwoBrands(monkeypatch, parallel=1)
    scheduler = loop.scheduler

    async def scenario() -> None:
        loop.clock.advance(61)
        await scheduler.tick()  # both due: the first starts, the second waits
        assert loop.started == ["default"]
        with pytest.raises(ConflictError, match="HOUSESTYLE_REFRESH_PARALLEL_BRANDS"):
            await scheduler.start_refresh("admin asked", actor="admin", brand="business")
        with pytest.raises(ConflictError, match="already running"):
            await scheduler.start_refresh("admin asked", actor="admin", brand="default")
        await scheduler.tick()
        assert loop.started == ["default"]
        await loop.finish("default")
        await scheduler.tick()  # now the business brand's turn; default just refreshed
        assert loop.started == ["default", "business"]
        await loop.finish("business")

    loop.run(scenario)


def test_the_scheduler_keeps_running_after_an_error_or_a_conflict() -> None:
    """Catches the `except Exception` in LoopScheduler.run removed or turned into a `return`: one failed round would
    end every later refresh and rollback check of the service."""
    scheduler = LoopScheduler(Settings(), FakeGateway(), check_every_s=0, clock=Clock())
    rounds: list[int] = []

    async def tick() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("the store went away for a moment")
        if len(rounds) == 2:
            raise ConflictError("another process is refreshing")

    scheduler.tick = tick

    async def scenario() -> None:
        task = asyncio.create_task(scheduler.run())
        for _ in range(1000):
            if len(rounds) >= 3:
                break
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert len(rounds) >= 3


# --- the rollback guard, one brand at a time ------------------------------------------------------------------------


def two_brand_lineage(url: str) -> int:
    """Business b1 live, then default v2 live, then business b2 live (b1 retired): b2 replaced b1, not v2."""
    with session_scope(url) as session:
        business = Brand(slug="business", company_name="GadgetCorp Business", system_prompt="Hi.",
                         public_model_name="business-assistant")
        session.add(business)
        session.flush()
        for version, brand in (("b1", business.id), ("v2", DEFAULT_BRAND_ID), ("b2", business.id)):
            register_adapter(session, version=version, path=f"/adapters/{version}", base_model="base", rank=8,
                             brand_id=brand)
        set_status(session, "b1", AdapterStatus.LIVE, action="promote")
        set_status(session, "v2", AdapterStatus.LIVE, action="promote")
        set_status(session, "b1", AdapterStatus.RETIRED, action="retire")
        set_status(session, "b2", AdapterStatus.LIVE, action="promote")
        return business.id


def test_a_business_brand_regression_rolls_back_to_its_own_previous_version_never_the_default_brands(
    store_url: str,
) -> None:
    """Catches `previous_live(session, live.version, brand)` -> `previous_live(session, live.version)` in
    check_live_regression (b2 would go back to the default brand's v2), `version_stats(..., brand_id=brand)` dropped,
    `brand_id=brand_key` dropped from the guard's gateway.rollback and `if check is None or not check.roll_back` ->
    `if check is None` in plugin/loop/scheduler.py, and `or made_live.action == "rollback"` dropped (the guard would
    judge the version it just brought back)."""
    business = two_brand_lineage(store_url)
    replay_reviews(store_url, "b1", approved=45, edited=5, brand_id=business)
    replay_reviews(store_url, "b2", approved=5, edited=35, brand_id=business)
    replay_reviews(store_url, "v2", approved=40, edited=0, brand_id=DEFAULT_BRAND_ID)
    with session_scope(store_url) as session:
        business_settings = brand_settings(get_settings(), session, "business")
        default_settings = brand_settings(get_settings(), session, "default")

    check = check_live_regression(business_settings)
    assert (check.live, check.previous, check.roll_back) == ("b2", "b1", True), check.test.reason
    assert check.test.old_rate == pytest.approx(0.1) and check.test.new_rate == pytest.approx(35 / 40)
    default = check_live_regression(default_settings)
    assert (default.live, default.previous, default.roll_back) == ("v2", BASE_LABEL, False)

    gateway = FakeGateway()
    scheduler = LoopScheduler(get_settings(), gateway, clock=Clock())
    asyncio.run(scheduler.guard_live_version(business_settings))
    asyncio.run(scheduler.guard_live_version(default_settings))
    assert gateway.rollbacks == [("b1", business, "auto-rollback")]

    with session_scope(store_url) as session:  # what the gateway's rollback records
        set_status(session, "b2", AdapterStatus.RETIRED, action="retire")
        set_status(session, "b1", AdapterStatus.LIVE, action="rollback")
    assert check_live_regression(business_settings) is None  # a rollback is never undone by the guard


def test_a_default_brand_refresh_does_not_reset_the_business_brands_new_review_count(store_url: str) -> None:
    """Catches `last_started(session, "refresh", brand_id)` -> `last_started(session, "refresh")` in
    reviews_since_last_refresh, and `reviews_since(..., brand_id=brand_id)` dropped (the default brand's reviews
    would count for the business brand)."""
    business = two_brand_lineage(store_url)
    replay_reviews(store_url, "b2", approved=3, edited=1, brand_id=business)
    replay_reviews(store_url, "v2", approved=2, edited=0, brand_id=DEFAULT_BRAND_ID)
    assert reviews_since_last_refresh(store_url, business) == 4
    RunLog(store_url, kind="refresh", params={}, step="export", brand_id=DEFAULT_BRAND_ID).finish(RunStatus.SUCCEEDED)
    assert reviews_since_last_refresh(store_url, DEFAULT_BRAND_ID) == 0
    assert reviews_since_last_refresh(store_url, business) == 4
    RunLog(store_url, kind="refresh", params={}, step="export", brand_id=business).finish(RunStatus.SUCCEEDED)
    assert reviews_since_last_refresh(store_url, business) == 0
