"""Named locks in the store: one refresh at a time, even with several plugin instances on one Postgres.

A lock is a lease: its holder renews it from a background thread every third of the lease (`LEASE`, 60 s), so a
holder that dies stops renewing and the lock frees itself within a minute. A process that wants the lock takes it
over at once when the holder ran on this machine and its process is gone (SIGKILL, SIGTERM, a crash), and after
the lease ran out when it ran elsewhere. Run rows the dead holder left `running` are closed as failed then, or
sooner by `close_runs_of_gone_holders` (each service start and scheduler tick), by the same rules.

`job_lock` holds a lock for one block of work; a `Lease` is the same lock held by one instance of a cluster across
the rounds of a periodic job (the scheduler's ticks, the redaction worker's passes): each round first calls
`Lease.hold()`, which renews the lease or takes it over by the same rules, and skips the round when it says no.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from core.db import session_scope
from core.errors import ConflictError, StoreError
from core.models import JobLock, as_utc, utcnow
from core.processes import pid_alive
from core.runs import close_runs_of, running_holders, working_under

log = logging.getLogger("housestyle.locks")

LEASE = timedelta(seconds=60)  # a dead holder blocks others at most this long (less on its own machine)


def this_machine() -> str:
    """Who shares our process ids: the host name plus the pid namespace (containers on one host differ in it)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}~{namespace}"


def new_holder_id() -> str:
    """`machine:pid:random`, unique per acquisition; the machine and pid tell a waiter whether the holder lives."""
    return f"{this_machine()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def why_holder_is_gone(
    holder: str, expires_at: datetime, *, now: datetime, machine: str, alive: Callable[[int], bool]
) -> str | None:
    """Why the lock's holder can no longer be holding it, or None while it may still be working.

    A holder on this machine whose process is gone is dead at once; anywhere else we only know once its lease ran
    out (it renews every third of the lease while alive).
    """
    if expires_at <= now:
        return f"its lease ran out at {expires_at:%H:%M:%S} UTC without being renewed"
    holder_machine, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if holder_machine == machine and pid_text.isdigit() and not alive(int(pid_text)):
        return f"its process {pid_text} died"
    return None


def _take_over(name: str, holder: str, *, ttl: timedelta, url: str) -> bool:
    now = utcnow()
    with session_scope(url) as session:
        current = session.get(JobLock, name)
        if current is None:
            return False  # released meanwhile: the caller inserts again
        old, expires_at = current.holder, current.expires_at
    if old == holder:
        return renew(name, holder, ttl=ttl, url=url)
    why = why_holder_is_gone(old, expires_at, now=now, machine=this_machine(), alive=pid_alive)
    if why is None:
        return False
    # conditional on the holder we judged (and, for a lapsed lease, on it still being lapsed: a slow holder may
    # have renewed meanwhile): of several waiters, exactly one wins
    still_gone = JobLock.holder == old
    if expires_at <= now:
        still_gone = still_gone & (JobLock.expires_at <= now)
    with session_scope(url) as session:
        taken = session.execute(
            update(JobLock).where(JobLock.name == name, still_gone)
            .values(holder=holder, acquired_at=now, expires_at=now + ttl)
        ).rowcount == 1
    if taken:
        closed = close_runs_of(old, reason=f"its process died: the {name} lock holder {old} was gone ({why})", url=url)
        log.warning("took over the %s lock from %s (%s); closed run(s) %s as failed", name, old, why, closed or "none")
    return taken


def close_runs_of_gone_holders(
    url: str, *, now: datetime | None = None, machine: str | None = None, alive: Callable[[int], bool] = pid_alive
) -> list[int]:
    """Close the rows still `running` whose lock holder is gone (`why_holder_is_gone`), or holds no lock any more,
    without waiting for the next taker of its lock; a live holder's rows stay. Returns the ids closed."""
    holders = running_holders(url)
    if not holders:
        return []
    now, machine = now or utcnow(), machine or this_machine()
    with session_scope(url) as session:
        held = {lock.holder: (lock.name, as_utc(lock.expires_at))
                for lock in session.execute(select(JobLock).where(JobLock.holder.in_(holders))).scalars()}
    closed: list[int] = []
    for holder in sorted(holders):
        if holder in held:
            name, expires_at = held[holder]
            why = why_holder_is_gone(holder, expires_at, now=now, machine=machine, alive=alive)
            if why is None:
                continue
            reason = f"its process died: the {name} lock holder {holder} was gone ({why})"
        else:  # its lock was released or taken over without the row being closed: nothing will close it now
            reason = f"its process died: its lock holder {holder} holds no lock any more"
        closed += close_runs_of(holder, reason=reason, url=url)
    return sorted(closed)


def try_acquire(name: str, holder: str, *, ttl: timedelta, url: str) -> bool:
    """Take the lock if it is free, ours, or its holder is gone (see `why_holder_is_gone`); True when we hold it."""
    for _ in range(3):  # the lock can be released between our insert and our look at it: try again
        now = utcnow()
        try:
            with session_scope(url) as session:
                session.add(JobLock(name=name, holder=holder, acquired_at=now, expires_at=now + ttl))
            return True
        except IntegrityError:
            pass
        with session_scope(url) as session:
            exists = session.get(JobLock, name) is not None
        if exists:
            return _take_over(name, holder, ttl=ttl, url=url)
    return False


def hold_lease(name: str, holder: str, *, ttl: timedelta, url: str) -> bool:
    """Non-blocking: renew the lease if `holder` holds it, take it if it is free or its holder is gone (see
    `why_holder_is_gone`); True when `holder` holds it now, until now + ttl. While another live holder has it, this
    is one store query."""
    with session_scope(url) as session:
        current = session.get(JobLock, name)
        seen = None if current is None else (current.holder, current.expires_at)
    if seen is not None:
        other, expires_at = seen
        if other == holder:
            return renew(name, holder, ttl=ttl, url=url)  # False if taken over meanwhile (we were judged dead)
        if why_holder_is_gone(other, expires_at, now=utcnow(), machine=this_machine(), alive=pid_alive) is None:
            return False
    return try_acquire(name, holder, ttl=ttl, url=url)


def renew(name: str, holder: str, *, ttl: timedelta, url: str) -> bool:
    """Push the expiry out while a long job is still working; False if the lock was lost."""
    with session_scope(url) as session:
        result = session.execute(
            update(JobLock).where(JobLock.name == name, JobLock.holder == holder).values(expires_at=utcnow() + ttl)
        )
        return result.rowcount == 1


def release(name: str, holder: str, *, url: str) -> None:
    with session_scope(url) as session:
        session.execute(delete(JobLock).where(JobLock.name == name, JobLock.holder == holder))


def current_holder(name: str, *, url: str) -> JobLock | None:
    with session_scope(url) as session:
        lock = session.get(JobLock, name)
        return lock if lock is not None and lock.expires_at > utcnow() else None


@dataclass
class HeldLock:
    """A lock we hold; `lost` is set if the heartbeat found it taken from us (we were judged dead)."""

    name: str
    holder: str
    lost: threading.Event = field(default_factory=threading.Event)


def _heartbeat(held: HeldLock, *, ttl: timedelta, url: str, stop: threading.Event) -> None:
    while not stop.wait(ttl.total_seconds() / 3):
        try:
            if not renew(held.name, held.holder, ttl=ttl, url=url):
                held.lost.set()
                log.error("lost the %s lock (%s): another process took it over", held.name, held.holder)
                return
        except StoreError as exc:  # the store is briefly unreachable: the lease still has two thirds to go
            log.warning("could not renew the %s lock: %s", held.name, exc)


@contextmanager
def job_lock(name: str, *, ttl: timedelta = LEASE, url: str) -> Iterator[HeldLock]:
    """Hold `name` for the duration of the block, renewing it every ttl/3; raise ConflictError naming who holds it."""
    holder = new_holder_id()
    if not try_acquire(name, holder, ttl=ttl, url=url):
        other = current_holder(name, url=url)
        who = f"{other.holder} since {other.acquired_at:%H:%M:%S} UTC" if other else "another process"
        raise ConflictError(f"a {name} is already running ({who}); wait for it to finish")
    try:
        with renewing(HeldLock(name, holder), ttl=ttl, url=url) as held, working_under(holder):
            yield held  # a run this block starts without a holder (a refresh's training) is ours
    finally:
        release(name, holder, url=url)


@contextmanager
def renewing(held: HeldLock, *, ttl: timedelta, url: str) -> Iterator[HeldLock]:
    """Renew the held lock every ttl/3 from a background thread for the duration of the block."""
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(held,), kwargs={"ttl": ttl, "url": url, "stop": stop},
                            name=f"housestyle-lock-{held.name}", daemon=True)
    beat.start()
    try:
        yield held
    finally:
        stop.set()
        beat.join()


class Lease:
    """Which instance of a cluster runs a periodic job now: call `hold()` at the start of each round and skip the
    round when it is False. The holder renews the lease with each round (and with `renewing()` during a long one);
    once it stops (it died, hung, or was stopped) another instance takes the lease over within `ttl`, at once when
    the holder's process on the same machine is gone. Holding the lease never blocks; `release()` on shutdown hands
    it on at once. `holder` defaults to a new id for this process (a child process working for us may share ours)."""

    def __init__(self, name: str, *, url: str, ttl: timedelta = LEASE, holder: str | None = None) -> None:
        self.name, self.url, self.ttl = name, url, ttl
        self.holder = holder or new_holder_id()
        self.held = False  # as of the last `hold()`

    def hold(self) -> bool:
        held = hold_lease(self.name, self.holder, ttl=self.ttl, url=self.url)
        if held != self.held:
            log.info("%s the cluster-wide %s job (lease %s, %ss)", "this instance now runs" if held else
                     "another instance now runs", self.name, self.holder, int(self.ttl.total_seconds()))
        self.held = held
        return held

    def renewing(self) -> AbstractContextManager[HeldLock]:
        """Keep the lease while a round that may outlast it runs (`lost` is set if it was taken from us anyway)."""
        return renewing(HeldLock(self.name, self.holder), ttl=self.ttl, url=self.url)

    def release(self) -> None:
        """Hand the lease on now (on shutdown); nothing if we never held it."""
        if self.held:
            release(self.name, self.holder, url=self.url)
            self.held = False
