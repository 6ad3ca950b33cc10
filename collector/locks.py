"""Named locks in the store: one refresh at a time, even with several plugin instances on one Postgres."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from collector.db import session_scope
from collector.errors import ConflictError
from collector.models import JobLock, utcnow


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def try_acquire(name: str, holder: str, *, ttl: timedelta, url: str) -> bool:
    """Take the lock if it is free or its holder let it expire; True when we hold it now."""
    now = utcnow()
    try:
        with session_scope(url) as session:
            session.add(JobLock(name=name, holder=holder, acquired_at=now, expires_at=now + ttl))
        return True
    except IntegrityError:
        pass
    # Someone holds or held it: take it over only if expired (or it is ours), in one conditional UPDATE.
    with session_scope(url) as session:
        result = session.execute(
            update(JobLock)
            .where(JobLock.name == name, (JobLock.expires_at < now) | (JobLock.holder == holder))
            .values(holder=holder, acquired_at=now, expires_at=now + ttl)
        )
        return result.rowcount == 1


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


@contextmanager
def job_lock(name: str, *, ttl: timedelta = timedelta(minutes=30), url: str) -> Iterator[str]:
    """Hold `name` for the duration of the block, or raise ConflictError naming who holds it."""
    holder = new_holder_id()
    if not try_acquire(name, holder, ttl=ttl, url=url):
        other = current_holder(name, url=url)
        who = f"{other.holder} since {other.acquired_at:%H:%M:%S} UTC" if other else "another process"
        raise ConflictError(f"a {name} is already running ({who}); wait for it to finish")
    try:
        yield holder
    finally:
        release(name, holder, url=url)
