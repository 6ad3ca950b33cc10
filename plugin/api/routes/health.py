"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.db import can_write
from plugin.api.deps import AdminCaller, GatewayDep, MetricsDep, SettingsDep
from plugin.api.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])

# Liveness and readiness are open on purpose: orchestrators and load balancers probe them without keys.
PUBLIC_PATHS = {"/health", "/ready"}


@router.get("/health", response_model=HealthOut, summary="The process is alive")
async def health() -> HealthOut:
    return HealthOut()


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut}}, summary="Ready to serve")
def ready(settings: SettingsDep, gateway: GatewayDep) -> JSONResponse:
    """Ready when the store takes a write (a full disk still reads) and at least one model server is ready."""
    problems = []
    database = can_write(settings.resolved_database_url)
    if not database:
        problems.append("the store cannot write (unreachable, or its disk is full): customers' messages would be lost")
    model_servers = bool(gateway is not None and gateway.ready())
    if not model_servers:
        problems.append("no model server ready" if gateway is not None else "running without model servers")
    body = ReadyOut(
        ready=database and model_servers,
        database=database,
        model_servers=model_servers,
        detail="; ".join(problems) or None,
    )
    headers = None if body.ready else {"Retry-After": str(settings.retry_after_seconds)}
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503, headers=headers)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (admin key)")
def metrics(caller: AdminCaller, service_metrics: MetricsDep) -> Response:
    """Counts of every brand together: a key of every brand only."""
    if caller.brands is not None:
        raise HTTPException(403, detail="the metrics count every brand's traffic: use an admin key of every brand "
                                        "(`housestyle keys create --role admin` without --brand)")
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)
