"""The feedback loop for admins: start a refresh, and read per-version review quality (the online metric)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from collector.errors import ConflictError
from collector.locks import current_holder
from collector.stats import version_stats
from plugin.deps import AdminCaller, SettingsDep, StoreDep
from plugin.refresh import REFRESH_LOCK

router = APIRouter(prefix="/admin", tags=["admin"])


class RefreshStarted(BaseModel):
    detail: str


class VersionQuality(BaseModel):
    version: str
    reviews: int
    approved: int
    edited: int
    rejected: int
    acceptance_rate: float
    edit_rate: float
    rejection_rate: float
    mean_edit_distance: float


@router.post("/refresh", response_model=RefreshStarted, status_code=202, responses={409: {"description": "A refresh "
             "is already running"}, 503: {"description": "No model servers: run `housestyle refresh` instead"}},
             summary="Start a refresh now (export, train, evaluate, gate, swap); watch it in /admin/runs")
async def start_refresh(caller: AdminCaller, request: Request, settings: SettingsDep) -> RefreshStarted:
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is None:
        from plugin.assistant import require_gateway

        require_gateway(None)  # answers 503 with the fix
    holder = await run_in_threadpool(current_holder, REFRESH_LOCK, url=settings.resolved_database_url)
    if holder is not None or (scheduler.running is not None and not scheduler.running.done()):
        raise ConflictError("a refresh is already running; watch it in /admin/runs")
    scheduler.running = asyncio.create_task(scheduler.refresh_now(f"asked by {caller.name}", actor=caller.name))
    return RefreshStarted(detail="refresh started; its steps and progress appear in /admin/runs")


@router.get("/quality", response_model=list[VersionQuality],
            summary="Acceptance, edit and rejection rate of each adapter version's drafts (live reviews)")
def version_quality(_: AdminCaller, store: StoreDep, since: datetime | None = None,
                    until: datetime | None = None) -> list[VersionQuality]:
    with store.session() as session:
        rows = version_stats(session, since=since, until=until)
    return [VersionQuality(**row.model_dump(), acceptance_rate=row.acceptance_rate, edit_rate=row.edit_rate,
                           rejection_rate=row.rejection_rate) for row in rows]
