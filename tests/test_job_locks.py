"""One refresh at a time: the store-held job lock works across processes on SQLite and Postgres, is renewed while
held, and is taken over from a holder that died (at once on this machine, after its lease elsewhere)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import select

from core import locks, processes
from core.db import session_scope
from core.errors import ConflictError
from core.models import JobLock, RunStatus, TrainingRun, utcnow
from core.settings import get_settings
from plugin.loop.decision import RemoteSwapper
from plugin.loop.refresh import REFRESH_LOCK, run_refresh

ROOT = Path(__file__).parent.parent


def _try_in_child(url: str, queue: multiprocessing.Queue) -> None:
    queue.put(locks.try_acquire("refresh", locks.new_holder_id(), ttl=timedelta(minutes=5), url=url))


def test_second_process_cannot_take_a_held_lock(store_url: str) -> None:
    with locks.job_lock("refresh", url=store_url):
        queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(target=_try_in_child, args=(store_url, queue))
        child.start()
        child.join(60)
        assert queue.get(timeout=5) is False
        with pytest.raises(ConflictError, match="already running"):
            with locks.job_lock("refresh", url=store_url):
                pass
    # released: the next one gets it
    with locks.job_lock("refresh", url=store_url):
        pass


def test_an_expired_lock_from_a_dead_holder_is_taken_over(store_url: str) -> None:
    assert locks.try_acquire("refresh", "dead-host:1:x", ttl=timedelta(seconds=-1), url=store_url)
    assert locks.try_acquire("refresh", "alive-host:2:y", ttl=timedelta(minutes=5), url=store_url)
    assert not locks.try_acquire("refresh", "third:3:z", ttl=timedelta(minutes=5), url=store_url)
    assert locks.renew("refresh", "alive-host:2:y", ttl=timedelta(minutes=5), url=store_url)
    assert not locks.renew("refresh", "dead-host:1:x", ttl=timedelta(minutes=5), url=store_url)


NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
HERE = "gadget-host~4026531836"


@pytest.mark.parametrize(
    ("holder", "expires_in_s", "alive_pids", "gone_because"),
    [
        (f"{HERE}:4242:ab", 50, {4242}, None),  # ours, alive, lease running: keep out
        (f"{HERE}:4242:ab", 50, set(), "its process 4242 died"),  # ours and dead: at once
        (f"{HERE}:4242:ab", -1, {4242}, "lease ran out"),  # alive but stopped renewing (hung): the lease decides
        ("other-host~4026531836:4242:ab", 50, set(), None),  # another machine: its pid says nothing here
        ("gadget-host~999:4242:ab", 50, set(), None),  # same host name, another container: its pids are not ours
        ("other-host~1:4242:ab", 0, set(), "lease ran out"),  # another machine, lease over
        ("not-a-holder-id", 50, set(), None),  # unparsable: only the lease can free it
    ],
)
def test_a_holder_is_gone_when_its_process_died_here_or_its_lease_ran_out(
    holder: str, expires_in_s: float, alive_pids: set[int], gone_because: str | None
) -> None:
    why = locks.why_holder_is_gone(holder, NOW + timedelta(seconds=expires_in_s), now=NOW, machine=HERE,
                                   alive=lambda pid: pid in alive_pids)
    assert (why is None) if gone_because is None else (gone_because in why)


@pytest.mark.parametrize(
    ("stat", "state"),
    [
        (b"4242 (python) S 1 4242 4242 0 -1", b"S"),
        (b"4242 (python) Z 1 4242 4242 0 -1", b"Z"),  # a zombie: killed, not yet reaped by its parent
        (b"4242 (a) b) Z 1 4242", b"Z"),  # a command name holding ') ' is read past its last ')'
        (b"4242 (my (vllm)) R 1", b"R"),
        (b"garbage", None),
        (b"4242 (python)", None),
    ],
)
def test_the_state_letter_is_read_after_the_command_name(stat: bytes, state: bytes | None) -> None:
    assert processes.stat_state(stat) == state


def test_a_zombie_or_a_vanished_process_is_not_alive_and_a_running_one_is() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while processes.pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # it exits at once and stays a zombie: we do not reap it yet
    zombie_alive = processes.pid_alive(child.pid)
    child.wait()
    assert processes.pid_alive(os.getpid()) is True
    assert zombie_alive is False
    assert processes.pid_alive(child.pid) is False  # reaped: the pid is gone


HOLDER_SCRIPT = textwrap.dedent(
    """
    import select, sys
    from datetime import timedelta
    from core import locks
    from core.db import open_store
    from core.runs import RunLog

    url, ttl = open_store(sys.argv[1]), timedelta(seconds=float(sys.argv[2]))
    with locks.job_lock("refresh", ttl=ttl, url=url) as held:
        run = RunLog(url, kind="refresh", params={}, step="train", holder=held.holder)
        print(run.run_id, held.holder, flush=True)
        select.select([sys.stdin], [], [], float(sys.argv[3]))  # until the test writes a line, or hold_s
    print("released", flush=True)
    """
)


def start_holder(url: str, *, ttl_s: float = 60, hold_s: float = 600) -> tuple[subprocess.Popen, int, str]:
    """A real `housestyle`-like process holding the refresh lock with a running run row; (process, run id, holder).
    It lets go once the test writes a line to its stdin (or after `hold_s`)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, url, str(ttl_s), str(hold_s)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )
    run_id, holder = child.stdout.readline().split()
    return child, int(run_id), holder


def run_row(url: str, run_id: int) -> TrainingRun:
    with session_scope(url) as session:
        return session.get(TrainingRun, run_id)


@pytest.mark.parametrize("kill_with", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_refresh_killed_while_holding_the_lock_is_taken_over_at_once_and_its_run_closed_as_failed(
    store_url: str, kill_with: signal.Signals
) -> None:
    child, run_id, holder = start_holder(store_url)
    with pytest.raises(ConflictError, match="already running"):  # alive: nobody else may refresh
        with locks.job_lock(REFRESH_LOCK, url=store_url):
            pass
    child.send_signal(kill_with)  # Python's default SIGTERM runs no finally: the lock and the row stay behind
    child.wait(30)
    assert locks.current_holder(REFRESH_LOCK, url=store_url).holder == holder
    assert run_row(store_url, run_id).status == RunStatus.RUNNING

    started = time.monotonic()
    with locks.job_lock(REFRESH_LOCK, url=store_url) as held:  # the next refresh runs now, not in 6 hours
        assert locks.current_holder(REFRESH_LOCK, url=store_url).holder == held.holder
    assert time.monotonic() - started < 10
    orphan = run_row(store_url, run_id)
    assert orphan.status == RunStatus.FAILED and orphan.finished_at is not None
    assert "its process died" in orphan.error and holder in orphan.error


def lease_expiry(url: str) -> datetime:
    with session_scope(url) as session:
        expires = session.exec(select(JobLock.expires_at).where(JobLock.name == REFRESH_LOCK)).one()
    return expires if expires.tzinfo else expires.replace(tzinfo=UTC)


@pytest.mark.slow
def test_a_live_holder_renews_its_lease_so_nobody_takes_it_while_it_works(store_url: str) -> None:
    """Catches the heartbeat's `renew(...)` dropped or never run (plugin's job_lock in core/locks.py): the lease would
    lapse and another process take the lock from a live holder. Real time, with margins of seconds: a 6 s lease
    renewed every 2 s, watched until well past the first lease's end."""
    child, run_id, holder = start_holder(store_url, ttl_s=6)
    try:
        first_expiry = lease_expiry(store_url)
        deadline = time.monotonic() + 60
        while lease_expiry(store_url) <= first_expiry and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lease_expiry(store_url) > first_expiry, "the lease was never renewed"
        while datetime.now(UTC) < first_expiry + timedelta(seconds=1):  # the first lease is over by now
            time.sleep(0.2)
        assert not locks.try_acquire(REFRESH_LOCK, locks.new_holder_id(), ttl=timedelta(minutes=1), url=store_url)
        assert locks.current_holder(REFRESH_LOCK, url=store_url).holder == holder
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "released"
        assert child.wait(30) == 0
        assert run_row(store_url, run_id).status == RunStatus.RUNNING  # alive the whole time: not closed by others
        assert locks.current_holder(REFRESH_LOCK, url=store_url) is None
    finally:
        child.kill()
        child.wait()


def test_a_holder_on_another_machine_is_taken_over_only_once_its_lease_ran_out(store_url: str) -> None:
    """Catches the lease's end ignored for a holder elsewhere (taken over at once, or never). No real time passes:
    the lease is ended in the store (a 2 s lease with a 0.1 s margin raced a loaded machine)."""
    elsewhere = "gpu-box~4026531836:4242:abcd1234"
    assert locks.try_acquire(REFRESH_LOCK, elsewhere, ttl=timedelta(minutes=5), url=store_url)
    with session_scope(store_url) as session:
        session.add(TrainingRun(kind="refresh", status=RunStatus.RUNNING, holder=elsewhere))
    with pytest.raises(ConflictError, match="gpu-box"):
        with locks.job_lock(REFRESH_LOCK, url=store_url):
            pass
    with session_scope(store_url) as session:  # its lease ran out
        session.execute(update(JobLock).where(JobLock.name == REFRESH_LOCK).values(
            expires_at=utcnow() - timedelta(seconds=1)))
    with locks.job_lock(REFRESH_LOCK, url=store_url):
        pass
    with session_scope(store_url) as session:
        (orphan,) = session.exec(select(TrainingRun).where(TrainingRun.holder == elsewhere)).all()
    assert orphan.status == RunStatus.FAILED and "lease ran out" in orphan.error


def test_ctrl_c_during_a_refresh_closes_its_run_as_failed_and_releases_the_lock(store_url: str) -> None:
    settings = get_settings()

    def press_ctrl_c(run_id: int) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT: Python raises KeyboardInterrupt in this thread
        time.sleep(5)  # never reached in full: the interrupt lands here

    # Python's own Ctrl-C handler, whatever an earlier test in this process left installed (servers set their own)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_refresh(settings, RemoteSwapper(settings), on_started=press_ctrl_c)
    finally:
        signal.signal(signal.SIGINT, previous)
    with session_scope(store_url) as session:
        (run,) = session.exec(select(TrainingRun).where(TrainingRun.kind == "refresh")).all()
    assert run.status == RunStatus.FAILED and "interrupted" in run.error
    assert locks.current_holder(REFRESH_LOCK, url=store_url) is None
