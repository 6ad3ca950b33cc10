"""Cluster-wide jobs run once: several `housestyle serve` instances on one store, and only the holder of a job's
lease (`core.locks.Lease`) runs the scheduler's ticks (refresh triggers, rollback guard) or the redaction worker's
passes (redaction, sweep, retention purge); another instance takes over once the holder stops renewing.

Two scheduler (or worker) objects stand for two instances. No real time passes: a holder's death is its lease ended
in the store, as if it ran on another machine and stopped renewing (tests/test_job_locks.py does the same). Each
docstring names the one-line change to the product code it catches.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
from datetime import timedelta

import pytest
from sqlalchemy import event, update

from collector.pii.ingest import RedactionPass
from core.db import get_engine, normalise_url, session_scope
from core.models import DEFAULT_BRAND_ID, JobLock, RunStatus, TrainingRun, utcnow
from core.settings import Settings, get_settings
from plugin import redaction_worker as worker_module
from plugin.loop import scheduler as scheduler_module
from plugin.loop.scheduler import LoopScheduler
from plugin.redaction_worker import RedactionWorker
from tests.fixtures.stores import replay_reviews
from tests.test_loop_scheduler import Clock, FakeGateway, two_brand_lineage

ELSEWHERE = "gpu-box~4026531836:4242:{}"  # a holder on another machine: its pid says nothing here


def end_lease(url: str, name: str) -> None:
    """The holder stopped renewing (it died elsewhere, or hangs) and its lease ran out."""
    with session_scope(url) as session:
        session.execute(update(JobLock).where(JobLock.name == name).values(
            expires_at=utcnow() - timedelta(seconds=1)))


def holder_of(url: str, name: str) -> str | None:
    with session_scope(url) as session:
        lock = session.get(JobLock, name)
        return lock.holder if lock else None


def instance(name: str, ran: list[str], *, settings: Settings | None = None) -> LoopScheduler:
    """A scheduler standing for one service instance; its tick records `name` when it runs (no brands, no work)."""
    scheduler = LoopScheduler(settings or get_settings(), FakeGateway(), check_every_s=3600, clock=Clock())
    scheduler.lease.holder = ELSEWHERE.format(name)

    def brands() -> list[Settings]:
        ran.append(name)
        return []

    scheduler.brands = brands
    return scheduler


def test_one_scheduler_ticks_and_another_takes_over_once_the_holders_lease_ran_out(store_url: str) -> None:
    """Catches the lease check dropped from LoopScheduler.tick (`if not await asyncio.to_thread(self.leads): return`:
    both instances would tick), and in core/locks.py hold_lease, the holder's `return renew(...)` -> `return True` (a
    live holder's lease would lapse and B take over while A still ticks) and `if why_holder_is_gone(...) is None:` ->
    `if True:` (B would never take over from a dead A)."""
    ran: list[str] = []
    a, b = instance("A", ran), instance("B", ran)

    async def scenario() -> None:
        await a.tick()
        await b.tick()  # A holds the lease: B skips
        await a.tick()
        assert ran == ["A", "A"]
        end_lease(store_url, "scheduler")  # A was slow, but ticks again before anyone else looks: it renews
        await a.tick()
        await b.tick()
        assert ran == ["A", "A", "A"]
        assert holder_of(store_url, "scheduler") == a.lease.holder

        end_lease(store_url, "scheduler")  # A died: it stopped renewing and its lease ran out
        await b.tick()
        await a.tick()  # A comes back (it was only hung): B holds the lease now
        await b.tick()
        assert ran == ["A", "A", "A", "B", "B"]
        assert holder_of(store_url, "scheduler") == b.lease.holder

    asyncio.run(scenario())


def test_a_scheduler_that_stops_hands_its_lease_on_at_once_and_a_skipped_tick_is_one_store_query(
    store_url: str,
) -> None:
    """Catches `self.lease.release()` dropped from LoopScheduler.run's `finally` (the other instance would wait for the
    lease to run out, minutes), and in hold_lease `if why_holder_is_gone(...) is None: return False` dropped (a
    skipped tick would try to insert and take over: four store queries instead of one)."""
    ran: list[str] = []
    a, b = instance("A", ran), instance("B", ran)
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if "joblock" in statement.lower():
            statements.append(statement)

    async def scenario() -> None:
        await a.tick()
        engine = get_engine(normalise_url(store_url))
        event.listen(engine, "before_cursor_execute", count)
        try:
            await b.tick()
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert ran == ["A"] and len(statements) == 1, statements

        task = asyncio.create_task(a.run())  # the service shuts down: its scheduler task is cancelled
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert holder_of(store_url, "scheduler") is None
        await b.tick()  # the next tick anywhere takes over; the lease never ran out
        assert ran == ["A", "B"]

    asyncio.run(scenario())


def test_an_instance_that_takes_the_scheduler_over_keeps_the_clusters_interval(store_url: str) -> None:
    """The refresh interval counts from the newest refresh any instance started (the store's run rows), not from the
    new holder's own start: instance B, up for 5 minutes, takes over from A, whose refresh started 58 minutes ago;
    with a 60-minute interval the next refresh is due 2 minutes later, not in 55. Catches, in
    LoopScheduler.minutes_since_last_refresh, `started = as_utc(last_started(...))` -> `started = None` (B would wait
    a whole interval from its start: a refresh skipped each time the lease moves), the stored age's sign flipped or
    counted in hours, the brand dropped from `last_started(...)` (another brand's refresh would count), and
    `min(ago)` -> `max(ago)` (a refresh this instance just ran would not count)."""
    settings = get_settings().model_copy(update={"refresh_interval_minutes": 60, "refresh_min_new_reviews": None})
    with session_scope(store_url) as session:
        run = TrainingRun(kind="refresh", status=RunStatus.SUCCEEDED, brand_id=DEFAULT_BRAND_ID,
                          started_at=utcnow() - timedelta(minutes=58))
        session.add(run)
    b = LoopScheduler(settings, FakeGateway(), check_every_s=3600, clock=Clock())
    b.clock.advance(5)  # B has run for 5 minutes when A's lease runs out
    assert b.refresh_due(settings) is None  # 58 minutes since A's refresh

    with session_scope(store_url) as session:  # 3 minutes later
        session.execute(update(TrainingRun).values(started_at=utcnow() - timedelta(minutes=61)))
    assert b.refresh_due(settings) == "60 minutes passed"
    b.last_refresh["default"] = b.clock()  # B's own refresh just ended
    assert b.refresh_due(settings) is None

    fresh = LoopScheduler(settings, FakeGateway(), check_every_s=3600, clock=Clock())
    other_brand = settings.model_copy(update={"brand": "business"}).with_brand_id(two_brand_lineage(store_url))
    fresh.clock.advance(3)  # no refresh of this brand ever ran: its interval counts from the instance's start
    assert fresh.refresh_due(other_brand) is None  # (the default brand's refresh 61 minutes ago is not its own)
    fresh.clock.advance(58)
    assert fresh.refresh_due(other_brand) == "60 minutes passed"


def guarded_instances(url: str) -> tuple[LoopScheduler, LoopScheduler, list, int]:
    """Two instances over a store where the business brand's live b2 regressed against b1; one shared record of the
    rollbacks their gateways made. No refresh is ever due."""
    business = two_brand_lineage(url)
    replay_reviews(url, "b1", approved=45, edited=5, brand_id=business)
    replay_reviews(url, "b2", approved=5, edited=35, brand_id=business)
    replay_reviews(url, "v2", approved=40, edited=0, brand_id=DEFAULT_BRAND_ID)
    rollbacks: list = []
    pair = []
    for name in ("A", "B"):
        scheduler = LoopScheduler(get_settings(), FakeGateway(), check_every_s=3600, clock=Clock())
        scheduler.lease.holder = ELSEWHERE.format(name)
        scheduler.gateway.rollbacks = rollbacks
        scheduler.refresh_due = lambda brand: None
        pair.append(scheduler)
    return pair[0], pair[1], rollbacks, business


def test_a_regression_both_instances_see_is_rolled_back_once(store_url: str) -> None:
    """Catches `return self.lease.hold()` -> `return True` in LoopScheduler.leads: both instances' guards would see
    b2's regression and roll it back, twice. (The tick's lease check alone dropped is still caught by the guard's own
    check before it rolls back; the test above catches that one.)"""
    a, b, rollbacks, business = guarded_instances(store_url)

    async def scenario() -> None:
        await a.tick()
        await b.tick()

    asyncio.run(scenario())
    assert rollbacks == [("b1", business, "auto-rollback")]


def test_a_guard_that_lost_its_lease_while_judging_leaves_the_rollback_to_the_new_holder(
    store_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Catches the second lease check dropped from LoopScheduler.guard_live_version (`if not await
    asyncio.to_thread(self.leads): ... return` before the rollback): A's lease ran out while it judged b2, B took
    over and judged it too, and both would roll back."""
    a, b, rollbacks, business = guarded_instances(store_url)
    judge = scheduler_module.check_live_regression

    def slow_judge(settings: Settings):
        check = judge(settings)
        if check is not None and check.roll_back and a.lease.held:  # A stalls here; meanwhile its lease runs out
            end_lease(store_url, "scheduler")
            assert b.leads()  # and B's tick takes over
        return check

    monkeypatch.setattr(scheduler_module, "check_live_regression", slow_judge)

    async def scenario() -> None:
        await a.tick()
        assert rollbacks == []
        await b.tick()

    asyncio.run(scenario())
    assert rollbacks == [("b1", business, "auto-rollback")]


def redaction_instances(url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[RedactionWorker, RedactionWorker, list]:
    """Two services' redaction workers on one store, whose passes only record who redacted, swept and purged."""
    done: list[tuple[str, str]] = []
    workers = {}
    for name in ("A", "B"):
        workers[name] = RedactionWorker(get_settings(), holder=ELSEWHERE.format(name))

    def who() -> str:
        return next(name for name, worker in workers.items() if holder_of(url, "redaction") == worker.lease.holder)

    def step(kind: str, result):
        def run(*args, **kwargs):
            done.append((who(), kind))
            return result
        return run

    monkeypatch.setattr(worker_module, "redact_pending", step("redact", RedactionPass()))
    monkeypatch.setattr(worker_module, "sweep", step("sweep", RedactionPass()))
    monkeypatch.setattr(worker_module, "purge_expired_raw", step("purge", 0))
    return workers["A"], workers["B"], done


def test_one_redaction_worker_redacts_sweeps_and_purges_and_another_takes_over_when_it_stops(
    store_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Catches the lease check dropped from RedactionWorker.run_once (`if not self.lease.hold(): return
    RedactionPass()`: every instance would redact, sweep and purge the store, each on its own clock)."""
    a, b, done = redaction_instances(store_url, monkeypatch)
    a.run_once()
    b.run_once()  # A holds the lease: B skips its pass
    a.run_once()  # A's sweep and purge are not due again yet
    assert done == [("A", "redact"), ("A", "sweep"), ("A", "purge"), ("A", "redact")]
    end_lease(store_url, "redaction")  # A died elsewhere
    b.run_once()
    a.run_once()
    assert done[4:] == [("B", "redact"), ("B", "sweep"), ("B", "purge")]


def test_a_redaction_worker_that_stops_hands_its_lease_on_at_once(
    store_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Catches `self.lease.release()` dropped from RedactionWorker._run's `finally` (the next instance would wait up
    to the ten-minute lease before redacting again)."""
    a, b, done = redaction_instances(store_url, monkeypatch)

    class OnePass:
        def __init__(self) -> None:
            self.waits = 0

        def wait(self, timeout: float) -> bool:
            self.waits += 1
            return self.waits > 1  # one pass, then the service closes the pipe

    a._run(OnePass())
    assert holder_of(store_url, "redaction") is None
    b.run_once()
    assert done == [("A", "redact"), ("A", "sweep"), ("A", "purge"), ("B", "redact"), ("B", "sweep"),
                    ("B", "purge")]


def test_a_worker_still_in_a_pass_at_shutdown_is_cut_and_its_lease_handed_on(store_url: str) -> None:
    """Stopping the service must not wait for a redaction pass (at nice 19 beside a refresh's training, a pass and
    the worker's exit took seconds of every stop): after the grace the worker is ended, and its lease, which it never
    got to release, is handed on by the service. Catches, in RedactionWorker.stop, the grace join turned into a plain
    `process.join()` (the stop waits the pass out) and `release(LOCK, ...)` dropped (the next instance would wait out
    the ten-minute lease)."""
    worker = RedactionWorker(get_settings(), holder=ELSEWHERE.format("A"))
    assert worker.lease.hold()  # as the worker process did in its first pass
    worker._process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(120,), daemon=True)
    worker._process.start()  # stands for a worker process deep in a pass: it does not look at the pipe
    worker.stop()
    assert not worker._process.is_alive() and worker._process.exitcode == -signal.SIGTERM  # cut, not waited out
    assert holder_of(store_url, "redaction") is None
