"""The feedback loop for admins: start a refresh, and read per-version review quality (the online metric)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request

from collector.stats import version_stats
from plugin.api.brand_scope import ChosenBrand
from plugin.api.deps import AdminCaller, StoreDep
from plugin.api.schemas import RefreshStarted, VersionQuality
from plugin.reply.errors import ModelServersUnavailable

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/refresh", response_model=RefreshStarted, status_code=202,
             responses={409: {"description": "A refresh is already running"},
                        503: {"description": "No model servers: run `housestyle refresh` instead"}},
             summary="Start a refresh now (export, train, evaluate, gate, swap); follow it at /admin/runs/{run_id}")
async def start_refresh(caller: AdminCaller, brand: ChosenBrand, request: Request) -> RefreshStarted:
    """Of the brand named (?brand=; default: the key's only brand, or the default brand)."""
    scheduler = request.app.state.scheduler
    if scheduler is None:
        raise ModelServersUnavailable(
            "this service runs without model servers, so it cannot swap a new version in; "
            "run `housestyle refresh` on the command line instead"
        )
    run_id = await scheduler.start_refresh(f"asked by {caller.name}", actor=caller.name, brand=brand.slug)
    return RefreshStarted(detail=f"refresh run {run_id} started; follow it at /admin/runs/{run_id}", run_id=run_id)


@router.get("/quality", response_model=list[VersionQuality],
            summary="Correction, acceptance, edit and rejection rate of each adapter version's drafts (live reviews)")
def version_quality(_: AdminCaller, brand: ChosenBrand, store: StoreDep, since: datetime | None = None,
                    until: datetime | None = None) -> list[VersionQuality]:
    with store.session() as session:
        rows = version_stats(session, since=since, until=until, brand_id=brand.id)
    return [VersionQuality(**row.model_dump(), correction_rate=row.correction_rate, acceptance_rate=row.acceptance_rate,
                           edit_rate=row.edit_rate, rejection_rate=row.rejection_rate) for row in rows]
