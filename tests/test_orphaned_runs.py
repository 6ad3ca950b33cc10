"""No run row stays `running` once its process is gone (issue 28): a service that stops mid-refresh closes its
refresh's rows (outer and inner) on the way out, and rows a process that died hard left behind are closed by the
next service start or scheduler tick, by the lock's own rule for a dead holder (`core.locks.why_holder_is_gone`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from datetime import timedelta

import httpx

from core import locks
from core.db import session_scope
from core.models import JobLock, RunStatus, TrainingRun, utcnow
from core.runs import RunLog
from core.settings import get_settings
from plugin.api.app import create_app
from plugin.loop import scheduler as scheduler_module
from plugin.loop.refresh import RefreshOutcome, refresh_lock
from plugin.loop.scheduler import STOPPED_MID_REFRESH, LoopScheduler
from serving.fingerprint import FingerprintChecks
from tests.fixtures.service import LiveServer, make_role_keys
from tests.test_loop_scheduler import Clock, FakeGateway

ELSEWHERE = "gpu-box~4026531836:4242:{}"  # a holder on another machine: only its lease says whether it lives


def dead_pid() -> int:
    """A pid of this machine whose process has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def left_behind(url: str, holder: str, *, lease_left: timedelta, name: str) -> list[int]:
    """A refresh lock held by `holder` with `lease_left` to go, and its outer refresh and inner train rows running."""
    with session_scope(url) as session:
        now = utcnow()
        session.add(JobLock(name=name, holder=holder, acquired_at=now - timedelta(minutes=5),
                            expires_at=now + lease_left))
    outer = RunLog(url, kind="refresh", params={}, step="train", holder=holder)
    inner = RunLog(url, kind="train", params={}, step="train", holder=holder)  # as trainer.train under the lock
    return [outer.run_id, inner.run_id]


def statuses(url: str, run_ids: list[int]) -> list[tuple[RunStatus, str | None]]:
    with session_scope(url) as session:
        return [(row.status, row.error) for row in (session.get(TrainingRun, run_id) for run_id in run_ids)]


def scenario(url: str) -> tuple[list[int], list[int]]:
    """(rows whose holder is gone, rows whose holder lives): a lease that ran out elsewhere, a dead process here
    with lease to spare; a live holder elsewhere, this very process, and a row with no lock holder at all."""
    here = locks.this_machine()
    gone = (left_behind(url, ELSEWHERE.format("lapsed"), lease_left=-timedelta(seconds=1), name="refresh")
            + left_behind(url, f"{here}:{dead_pid()}:deadbeef", lease_left=timedelta(minutes=1), name="refresh:b"))
    live = (left_behind(url, ELSEWHERE.format("working"), lease_left=timedelta(seconds=30), name="refresh:c")
            + left_behind(url, f"{here}:{os.getpid()}:cafe0000", lease_left=timedelta(seconds=30), name="refresh:d")
            + [RunLog(url, kind="train", params={}, step="train").run_id])  # `housestyle train`: no lock behind it
    return gone, live


def assert_closed_only_the_gone(url: str, gone: list[int], live: list[int]) -> None:
    closed = statuses(url, gone)
    assert [status for status, _ in closed] == [RunStatus.FAILED] * 4, closed
    assert all("its process died" in error for _, error in closed), closed
    assert "lease ran out" in closed[0][1] and "died" in closed[2][1]
    assert statuses(url, live) == [(RunStatus.RUNNING, None)] * 5


def test_rows_of_a_holder_whose_lease_ran_out_are_closed_by_the_next_scheduler_tick_and_a_live_holders_stay(
    store_url: str,
) -> None:
    """Catches the sweep dropped from LoopScheduler.tick (the rows would wait for the next refresh of that brand),
    and `if why is None: continue` in close_runs_of_gone_holders -> `if False:` (live holders' rows closed too)."""
    gone, live = scenario(store_url)
    scheduler = LoopScheduler(get_settings(), FakeGateway(), check_every_s=3600, clock=Clock())
    scheduler.brands = list  # no brands: the tick does nothing but lead and sweep
    asyncio.run(scheduler.tick())
    assert_closed_only_the_gone(store_url, gone, live)


def test_rows_of_a_holder_whose_lease_ran_out_are_closed_when_a_service_starts(store_url: str) -> None:
    """Catches the sweep dropped from the app's lifespan (a service without model servers has no scheduler tick)."""
    gone, live = scenario(store_url)
    server = LiveServer(create_app(get_settings())).start()
    try:
        assert_closed_only_the_gone(store_url, gone, live)
    finally:
        server.stop()


class RunningGateway(FakeGateway):
    """Enough of a started ServingGateway for the app to run its scheduler (nothing is served)."""

    started = True
    fingerprints = FingerprintChecks("sqlite://")  # nothing is served: nothing is probed

    def ready(self) -> bool:
        return True

    async def stop(self) -> None:
        return None


def test_a_service_stopped_mid_refresh_closes_its_refreshs_outer_and_inner_rows_on_the_way_out(
    store_url: str, monkeypatch
) -> None:
    """The service's shutdown (what SIGTERM runs before uvicorn re-raises it and the process, with the refresh's
    worker thread, is gone). Catches `self.close_interrupted_runs()` dropped from LoopScheduler.run's `finally`."""
    rows: list[int] = []
    training, let_go = threading.Event(), threading.Event()

    def refresh_stuck_in_training(settings, swapper, *, actor, on_started, vllm) -> RefreshOutcome:
        url = settings.resolved_database_url
        with locks.job_lock(refresh_lock(settings.brand), url=url) as held:
            outer = RunLog(url, kind="refresh", params={}, step="train", holder=held.holder)
            inner = RunLog(url, kind="train", params={}, step="train")  # as trainer.train starts it: no holder given
            rows.extend([outer.run_id, inner.run_id])
            on_started(outer.run_id)
            training.set()
            let_go.wait(60)  # the process exit would kill this thread here; the test lets it return instead
        return RefreshOutcome(run_id=outer.run_id, status=RunStatus.RUNNING)

    monkeypatch.setattr(scheduler_module, "run_refresh", refresh_stuck_in_training)
    settings = get_settings().model_copy(update={"redraft_interval_s": 3600})
    app = create_app(settings, gateway=RunningGateway(), manage_gateway=False, control_token="t")
    server = LiveServer(app).start()
    try:
        admin = make_role_keys(settings.resolved_database_url)["admin"]
        answer = httpx.post(f"{server.url}/admin/refresh", headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        assert answer.status_code == 202, answer.text
        assert training.wait(30)
        assert statuses(store_url, rows) == [(RunStatus.RUNNING, None)] * 2
        server.server.should_exit = True  # the shutdown SIGTERM starts (the thread is still training meanwhile)
        closed = [(RunStatus.FAILED, STOPPED_MID_REFRESH)] * 2
        deadline = time.monotonic() + 30
        while statuses(store_url, rows) != closed and server.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert statuses(store_url, rows) == closed
    finally:
        let_go.set()
        server.stop()
