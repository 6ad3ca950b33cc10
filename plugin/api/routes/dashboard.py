"""Read-only JSON for the web UI: who the caller is, refresh runs, the correction rate over time, registry history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from collector.stats import correction_rate_series
from core import registry, runs
from core.errors import InputError, NotFoundError
from core.models import RunStatus, TrainingRun, as_utc, utcnow
from plugin.api.brand_scope import BrandFilter, ChosenBrand, DirectoryDep, visible_brands
from plugin.api.deps import AdminCaller, Caller, StoreDep, authenticate
from plugin.api.schemas import (
    LOG_TAIL_CHARS,
    AdapterEventOut,
    BrandOut,
    CorrectionRateOut,
    CorrectionRatePoint,
    CorrectionRateSeries,
    MeOut,
    RunOut,
)

router = APIRouter(tags=["web ui"])

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@router.get("/me", response_model=MeOut, summary="The calling key's name and role (the web UI shows what it may do)")
async def who_am_i(caller: Annotated[Caller, Depends(authenticate)], directory: DirectoryDep) -> MeOut:
    """Any active key may ask; the role decides which pages the UI offers, the brands which brands it switches
    between (the API still checks every call)."""
    brands = [BrandOut(name=entry.slug, company_name=entry.settings.company_name,
                       public_model_name=entry.public_model_name)
              for entry in visible_brands(await directory.entries(caller.brands), caller)]
    return MeOut(name=caller.name, role=caller.role, brands=brands)


@router.get("/admin/runs", response_model=list[RunOut], summary="Recent training and refresh runs, newest first")
def recent_runs(
    _: AdminCaller, brands: BrandFilter, store: StoreDep, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> list[RunOut]:
    """Of the brand named (?brand=), else of every brand the key may act on."""
    with store.session() as session:
        return [run_out(run) for run in runs.recent_runs(session, limit=limit, brand_ids=brands)]


@router.get("/admin/runs/{run_id}", response_model=RunOut, responses={404: {"description": "Unknown run"}},
            summary="One training or refresh run: step, progress, log tail, outcome")
def one_run(run_id: Annotated[int, Path(ge=1, le=2_147_483_647)], caller: AdminCaller, store: StoreDep) -> RunOut:
    missing = NotFoundError(f"run {run_id} does not exist; GET /admin/runs lists the recent ones")
    with store.session() as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise missing
        caller.check_brand(run.brand_id, missing)
        return run_out(run)


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


@router.get("/admin/correction-rate", response_model=CorrectionRateOut,
            summary="Correction rate (edited + rejected) of each adapter version over time")
def correction_rate_over_time(
    _: AdminCaller,
    brand: ChosenBrand,
    store: StoreDep,
    since: datetime | None = None,
    until: datetime | None = None,
    bucket_minutes: Annotated[int, Query(ge=1, le=60 * 24 * 31)] = 60 * 24,
) -> CorrectionRateOut:
    """Live reviews only (imported history is left out), bucketed by when the agent reviewed; default the last 30 days.

    The same number the automatic rollback acts on (`collector.stats.correction_rate`)."""
    bucket = timedelta(minutes=bucket_minutes)
    until = as_utc(until) if until else utcnow()
    if since is None:  # buckets on round boundaries (whole hours, UTC midnights) read better than now-minus-30-days
        since = EPOCH + ((until - timedelta(days=30)) - EPOCH) // bucket * bucket
    since = as_utc(since)
    if since >= until:
        raise InputError("since must be before until; e.g. ?since=2026-01-01T00:00:00Z")
    if (until - since) / bucket > 5000:
        raise InputError("more than 5000 time buckets asked for; raise bucket_minutes or shorten since..until")
    with store.session() as session:
        rates = correction_rate_series(session, since=since, until=until, bucket=bucket, brand_id=brand.id)
    series = [CorrectionRateSeries(version=version, points=[CorrectionRatePoint(**point.model_dump())
                                                            for point in points])
              for version, points in rates.items()]
    return CorrectionRateOut(since=since, until=until, bucket_minutes=bucket_minutes, series=series)


router.add_api_route("/admin/edit-rate", correction_rate_over_time, methods=["GET"], response_model=CorrectionRateOut,
                     deprecated=True, summary="Old name of /admin/correction-rate")


@router.get(
    "/admin/adapter-history", response_model=list[AdapterEventOut], summary="Who promoted, rolled back or canaried what"
)
def adapter_history(
    _: AdminCaller, brand: ChosenBrand, store: StoreDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[AdapterEventOut]:
    with store.session() as session:
        return [AdapterEventOut.model_validate(e, from_attributes=True)
                for e in registry.history(session, limit=limit, brand_id=brand.id)]
