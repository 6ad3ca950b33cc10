"""Training and refresh runs in the store: the one writer of `TrainingRun` rows (start, steps, progress, log, end),
and where they are read back.

A run row is what admins watch (`/admin/runs`, the dashboard): its step, progress within the step, a log with
timestamps, and at the end its status, metrics, adapter version or error. Training (`trainer.train`) and the
refresh (`plugin.loop.refresh`) both go through `RunLog`, so a row reads the same whoever wrote it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session

from core.db import session_scope
from core.models import DEFAULT_BRAND_ID, RunStatus, TrainingRun, utcnow

log = logging.getLogger("housestyle.runs")

# the job lock this thread works under (`core.locks.job_lock` sets it): a run started inside it without a holder of
# its own (a refresh's inner training run) is closed with it when its process dies
HELD_LOCK: ContextVar[str | None] = ContextVar("housestyle_held_lock", default=None)


@contextmanager
def working_under(holder: str) -> Iterator[None]:
    """Runs started in this block (and this thread) belong to the lock `holder`, unless they name their own."""
    token = HELD_LOCK.set(holder)
    try:
        yield
    finally:
        HELD_LOCK.reset(token)


class RunLog:
    """One run row: `step()` as the run moves on, `finish()` once at the end (in the caller's session if given)."""

    def __init__(
        self, url: str | None, *, kind: str, params: dict[str, Any], step: str, holder: str | None = None,
        brand_id: int = DEFAULT_BRAND_ID,
    ) -> None:
        """`holder`: the job lock's holder id the run works under (default: the lock this thread holds, if any); if
        that process dies, the next taker of the lock closes the row as failed (`close_runs_of`). `brand_id`: whose
        run it is."""
        self.url = url
        self.started = time.monotonic()
        holder = holder or HELD_LOCK.get()
        with session_scope(url) as session:
            run = TrainingRun(kind=kind, status=RunStatus.RUNNING, step=step, params=params, holder=holder,
                              brand_id=brand_id)
            session.add(run)
            session.flush()
            self.run_id: int = int(run.id)

    def step(self, name: str, message: str, progress: float = 0.0) -> None:
        """Enter (or stay in) step `name` at `progress` (0..1 within it) and append a timestamped log line."""
        line = f"[{time.monotonic() - self.started:7.1f}s] {name}: {message}"
        log.info("run %s %s", self.run_id, line)
        with session_scope(self.url) as session:
            run = session.get(TrainingRun, self.run_id)
            if run is not None:
                run.step, run.progress = name, progress
                run.log = (run.log + "\n" + line).strip()
                session.add(run)

    def finish(
        self,
        status: RunStatus,
        *,
        metrics: dict[str, Any] | None = None,
        version: str | None = None,
        error: str | None = None,
        session: Session | None = None,
    ) -> None:
        """Close the row: succeeded (step "done") or failed (the step it failed in stays)."""
        if session is None:
            with session_scope(self.url) as own:
                self._close(own, status, metrics, version, error)
        else:
            self._close(session, status, metrics, version, error)

    def _close(self, session: Session, status: RunStatus, metrics: dict[str, Any] | None, version: str | None,
               error: str | None) -> None:
        run = session.get(TrainingRun, self.run_id)
        if run is None:
            return
        run.status, run.finished_at, run.progress = status, utcnow(), 1.0
        if status == RunStatus.SUCCEEDED:
            run.step = "done"
        if metrics is not None:
            run.metrics = metrics
        run.adapter_version = version or run.adapter_version
        run.error = error
        session.add(run)


def _fail_running(condition: Any, *, reason: str, url: str) -> list[int]:
    """Close the rows still `running` that match `condition`, as failed with `reason`; returns their ids."""
    with session_scope(url) as session:
        ids = list(session.execute(
            update(TrainingRun)
            .where(condition, TrainingRun.status == RunStatus.RUNNING)
            .values(status=RunStatus.FAILED, finished_at=utcnow(), error=reason)
            .returning(TrainingRun.id)
        ).scalars())
    for run_id in ids:
        log.warning("run %s closed as failed: %s", run_id, reason)
    return sorted(ids)


def close_runs_of(holder: str, *, reason: str, url: str) -> list[int]:
    """Close every row still `running` under a lock holder that died, as failed with `reason`; returns their ids."""
    return _fail_running(TrainingRun.holder == holder, reason=reason, url=url)


def close_runs_with(run_id: int, *, reason: str, url: str) -> list[int]:
    """Close run `run_id` and every row still `running` under its lock holder (a refresh's inner training run), as
    failed with `reason` (its process is stopping); returns their ids."""
    with session_scope(url) as session:
        run = session.get(TrainingRun, run_id)
        holder = run.holder if run is not None else None
    # no lock behind it: only the row itself
    condition = TrainingRun.id == run_id if holder is None else TrainingRun.holder == holder
    return _fail_running(condition, reason=reason, url=url)


def running_holders(url: str) -> set[str]:
    """The lock holders of rows still `running` (a row without one has no lease to say whether its process lives)."""
    with session_scope(url) as session:
        return set(session.execute(
            select(TrainingRun.holder).where(TrainingRun.status == RunStatus.RUNNING, TrainingRun.holder.is_not(None))
            .distinct()
        ).scalars())


def recent_runs(session: Session, *, limit: int, brand_ids: Iterable[int] | None = None) -> list[TrainingRun]:
    """The newest runs first (of the given brands only, when named)."""
    query = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
    if brand_ids is not None:
        query = query.where(TrainingRun.brand_id.in_(list(brand_ids)))
    return list(session.execute(query).scalars())


def last_started(session: Session, kind: str, brand_id: int = DEFAULT_BRAND_ID) -> datetime | None:
    """When the brand's newest run of this kind ("train", "refresh") started; None if none ever did."""
    return session.execute(
        select(func.max(TrainingRun.started_at)).where(TrainingRun.kind == kind, TrainingRun.brand_id == brand_id)
    ).scalar()
