"""Which vLLM adapter names each running service still uses, so that on shared replicas the last to let go unloads.

Several `housestyle serve` processes on one store may share their vLLM servers (HOUSESTYLE_SHARED_REPLICAS): a
version is then loaded once, under the one name the registry records, and every service routes to it. A service
that stops routing to a name (a swap it made, or one it followed) must not unload it while another service still
routes to it or still streams on it. Each service therefore publishes its names here (renewed on every registry
re-read) and, once its own requests on a name have drained, unloads it only if no other living service lists it.

A service counts as living by the lease rules of `core.locks`: its row is unexpired, and, on this machine, its
process still runs. Every service publishes before it checks the others, so of two letting go at once at least one
sees the other's row without the name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from core.db import session_scope
from core.locks import this_machine, why_holder_is_gone
from core.models import ServedNames, as_utc, utcnow
from core.processes import pid_alive


def publish(holder: str, names: Iterable[str], *, ttl: timedelta, url: str) -> None:
    """Record the names `holder` uses now, valid for `ttl` unless published again."""
    with session_scope(url) as session:
        row = session.get(ServedNames, holder) or ServedNames(holder=holder, expires_at=utcnow())
        row.names, row.expires_at = " ".join(sorted(set(names))), utcnow() + ttl
        session.add(row)


def withdraw(holder: str, *, url: str) -> None:
    """`holder` stops: it uses no name any more."""
    with session_scope(url) as session:
        session.execute(delete(ServedNames).where(ServedNames.holder == holder))


def used_by_others(
    holder: str, *, url: str, now: datetime | None = None, machine: str | None = None,
    alive: Callable[[int], bool] = pid_alive,
) -> set[str]:
    """Every name a living service other than `holder` uses."""
    now, machine = now or utcnow(), machine or this_machine()
    with session_scope(url) as session:
        rows = [(row.holder, row.names, as_utc(row.expires_at)) for row in session.execute(
            select(ServedNames).where(ServedNames.holder != holder)).scalars()]
    return {name for other, names, expires_at in rows
            if why_holder_is_gone(other, expires_at, now=now, machine=machine, alive=alive) is None
            for name in names.split()}
