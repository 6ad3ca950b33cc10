"""Read-only JSON for the web UI: who the caller is, refresh runs, edit rate over time, and the registry's history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from collector import registry
from collector.errors import InputError
from collector.models import ApiKeyRole, Draft, Review, ReviewDecision, RunStatus, TrainingRun, utcnow
from collector.stats import BASE_LABEL, IMPORT_AGENT
from plugin.deps import AdminCaller, Caller, StoreDep, authenticate

router = APIRouter(tags=["web ui"])

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LOG_TAIL_CHARS = 2000  # the dashboard shows the end of a run's log; the whole log can be megabytes


class MeOut(BaseModel):
    name: str = Field(description="The key's name (the agent id in reviews).")
    role: ApiKeyRole


class RunOut(BaseModel):
    id: int
    kind: str
    status: RunStatus
    step: str | None
    progress: float = Field(description="0..1 within the current step.")
    adapter_version: str | None
    metrics: dict[str, Any] | None
    error: str | None
    log_tail: str = Field(description=f"The last {LOG_TAIL_CHARS} characters of the run's log.")
    started_at: datetime
    finished_at: datetime | None


class EditRatePoint(BaseModel):
    start: datetime = Field(description="Start of the time bucket (UTC).")
    reviews: int
    approved: int
    edited: int
    rejected: int
    edit_rate: float = Field(description="edited / reviews in this bucket.")


class EditRateSeries(BaseModel):
    version: str = Field(description=f"Adapter version; '{BASE_LABEL}' for drafts of the base model alone.")
    points: list[EditRatePoint]


class EditRateOut(BaseModel):
    since: datetime
    until: datetime
    bucket_minutes: int
    series: list[EditRateSeries]


class AdapterEventOut(BaseModel):
    version: str
    action: str
    actor: str
    reason: str | None
    created_at: datetime


@router.get("/me", response_model=MeOut, summary="The calling key's name and role (the web UI shows what it may do)")
async def who_am_i(caller: Annotated[Caller, Depends(authenticate)]) -> MeOut:
    """Any active key may ask; the role decides which pages the UI offers (the API still checks every call)."""
    return MeOut(name=caller.name, role=caller.role)


@router.get("/admin/runs", response_model=list[RunOut], summary="Recent training and refresh runs, newest first")
def recent_runs(_: AdminCaller, store: StoreDep, limit: Annotated[int, Query(ge=1, le=100)] = 10) -> list[RunOut]:
    with store.session() as session:
        runs = session.execute(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)).scalars().all()
        return [run_out(run) for run in runs]


def run_out(run: TrainingRun) -> RunOut:
    return RunOut(
        id=run.id,
        kind=run.kind,
        status=RunStatus(run.status),
        step=run.step,
        progress=run.progress,
        adapter_version=run.adapter_version,
        metrics=run.metrics,
        error=run.error,
        log_tail=run.log[-LOG_TAIL_CHARS:],
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; the store writes UTC only."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@router.get("/admin/edit-rate", response_model=EditRateOut, summary="Edit rate of each adapter version over time")
def edit_rate_over_time(
    _: AdminCaller,
    store: StoreDep,
    since: datetime | None = None,
    until: datetime | None = None,
    bucket_minutes: Annotated[int, Query(ge=1, le=60 * 24 * 31)] = 60 * 24,
) -> EditRateOut:
    """Live reviews only (imported history is left out), bucketed by when the agent reviewed; default the last 30 days."""
    bucket = timedelta(minutes=bucket_minutes)
    until = as_utc(until) if until else utcnow()
    if since is None:  # buckets on round boundaries (whole hours, UTC midnights) read better than now-minus-30-days
        since = EPOCH + ((until - timedelta(days=30)) - EPOCH) // bucket * bucket
    since = as_utc(since)
    if since >= until:
        raise InputError("since must be before until; e.g. ?since=2026-01-01T00:00:00Z")
    if (until - since) / bucket > 5000:
        raise InputError("more than 5000 time buckets asked for; raise bucket_minutes or shorten since..until")
    label = func.coalesce(Draft.adapter_version, BASE_LABEL)
    query = (
        select(label, Review.decision, Review.created_at)
        .join(Draft, Draft.id == Review.draft_id)
        .where(Review.agent_id != IMPORT_AGENT, Review.created_at >= since, Review.created_at < until)
    )
    counts: dict[str, dict[int, dict[str, int]]] = {}
    with store.session() as session:
        # bucketing in Python keeps one query that reads the same on SQLite and Postgres
        for version, decision, reviewed_at in session.execute(query):
            index = int((as_utc(reviewed_at) - since) / bucket)
            cell = counts.setdefault(version, {}).setdefault(index, dict.fromkeys(ReviewDecision, 0))
            cell[ReviewDecision(decision)] += 1
    series = []
    for version, buckets in sorted(counts.items()):
        points = []
        for index, cell in sorted(buckets.items()):
            reviews = sum(cell.values())
            points.append(
                EditRatePoint(
                    start=since + index * bucket,
                    reviews=reviews,
                    approved=cell[ReviewDecision.APPROVED],
                    edited=cell[ReviewDecision.EDITED],
                    rejected=cell[ReviewDecision.REJECTED],
                    edit_rate=cell[ReviewDecision.EDITED] / reviews,
                )
            )
        series.append(EditRateSeries(version=version, points=points))
    return EditRateOut(since=since, until=until, bucket_minutes=bucket_minutes, series=series)


@router.get(
    "/admin/adapter-history", response_model=list[AdapterEventOut], summary="Who promoted, rolled back or canaried what"
)
def adapter_history(
    _: AdminCaller, store: StoreDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[AdapterEventOut]:
    with store.session() as session:
        return [AdapterEventOut.model_validate(e, from_attributes=True) for e in registry.history(session, limit=limit)]
