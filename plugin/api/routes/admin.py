"""Administration: adapter versions (list, promote, rollback, canary through the serving gateway), data stats, export.

The `housestyle adapters` CLI calls these with the control token of the running `housestyle serve`; each change
returns only once it is complete on every replica.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from collector.export import export_dataset, export_options
from collector.stats import BASE_LABEL, DRAFT_OUTCOMES, conversations_by_channel, version_stats
from core import registry
from core.errors import InputError, NotFoundError
from core.registry import VERSION_ID_PATTERN
from plugin.api.brand_scope import ChosenBrand
from plugin.api.deps import AdminCaller, Caller, GatewayDep, Store, StoreDep
from plugin.api.schemas import (
    AdapterChange,
    AdapterOut,
    AdaptersOut,
    CanaryIn,
    ExportIn,
    ExportOut,
    RollbackIn,
    StatsOut,
    VersionDrafts,
)
from plugin.reply.upstream import require_gateway
from serving.gateway import SwapResult

router = APIRouter(prefix="/admin", tags=["admin"])

VersionPath = Annotated[str, Path(pattern=VERSION_ID_PATTERN, max_length=100, description="Adapter version id")]

CHANGE_ERRORS = {
    404: {"description": "Unknown version"},
    409: {"description": "Not possible in the current state (already live, swap failed and was undone)"},
    422: {"description": "The adapter failed validation"},
    503: {"description": "No model server is ready"},
}


@router.get("/adapters", response_model=AdaptersOut, summary="Registered adapter versions and what is served")
def list_adapters(_: AdminCaller, brand: ChosenBrand, store: StoreDep, gateway: GatewayDep) -> AdaptersOut:
    """The brand's versions (?brand=; default: the key's only brand, or the default brand)."""
    with store.session() as session:
        adapters = [AdapterOut.model_validate(a, from_attributes=True)
                    for a in registry.list_adapters(session, brand.id)]
    serving = gateway.status(brand.id).model_dump(mode="json") if gateway is not None else None
    return AdaptersOut(adapters=adapters, serving=serving)


def version_in_scope(store: Store, caller: Caller, version: str) -> str:
    """The version, if it belongs to a brand the key may act on; another brand's answers as an unknown version."""
    missing = NotFoundError(f"adapter version {version} is not registered; GET /admin/adapters lists them")
    with store.session() as session:
        try:
            adapter = registry.get_adapter(session, version)
        except NotFoundError:
            raise missing from None  # the same words as another brand's: existence does not leak
        caller.check_brand(adapter.brand_id, missing)
    return version


@router.post(
    "/adapters/rollback",
    response_model=SwapResult,
    responses=CHANGE_ERRORS,
    summary="Go back to the previous (or a named) version",
)
async def rollback_adapter(
    body: RollbackIn, caller: AdminCaller, brand: ChosenBrand, store: StoreDep, gateway: GatewayDep
) -> SwapResult:
    """Of the brand named (?brand=); a named version must be that brand's."""
    if body.version is not None:
        await run_in_threadpool(version_in_scope, store, caller, body.version)
    return await require_gateway(gateway).rollback(body.version, actor=caller.acting_as(body.actor),
                                                   reason=body.reason, brand_id=brand.id)


@router.post(
    "/adapters/{version}/promote",
    response_model=SwapResult,
    responses=CHANGE_ERRORS,
    summary="Make a version live everywhere",
)
async def promote_adapter(
    version: VersionPath, body: AdapterChange, caller: AdminCaller, store: StoreDep, gateway: GatewayDep
) -> SwapResult:
    """Within the version's own brand: another brand's traffic never waits for it."""
    await run_in_threadpool(version_in_scope, store, caller, version)
    return await require_gateway(gateway).promote(version, actor=caller.acting_as(body.actor), reason=body.reason)


@router.post(
    "/adapters/{version}/canary",
    response_model=SwapResult,
    responses=CHANGE_ERRORS,
    summary="Serve a share of conversations with it",
)
async def canary_adapter(
    version: VersionPath, body: CanaryIn, caller: AdminCaller, store: StoreDep, gateway: GatewayDep
) -> SwapResult:
    await run_in_threadpool(version_in_scope, store, caller, version)
    return await require_gateway(gateway).canary(
        version, body.share, actor=caller.acting_as(body.actor), reason=body.reason
    )


def store_stats(session: Session, brand_id: int | None = None) -> StatsOut:
    """Every draft of the brand (None: of every brand) counts here, imported history and drafts still waiting for
    an agent included."""
    by_channel = conversations_by_channel(session, brand_id)
    per_version = [
        VersionDrafts(
            adapter_version=None if row.version == BASE_LABEL else row.version,
            drafts=row.reviews + row.pending,
            pending=row.pending,
            approved=row.approved,
            edited=row.edited,
            rejected=row.rejected,
        )
        for row in version_stats(session, include_imported=True, include_pending=True, brand_id=brand_id)
    ]
    return StatsOut(
        conversations=sum(by_channel.values()),
        conversations_by_channel=by_channel,
        drafts=sum(row.drafts for row in per_version),
        drafts_by_decision={outcome: sum(getattr(row, outcome) for row in per_version) for outcome in DRAFT_OUTCOMES},
        per_adapter_version=sorted(per_version, key=lambda row: row.adapter_version or ""),
    )


@router.get("/stats", response_model=StatsOut, summary="Conversations, drafts by decision, per adapter version")
def data_stats(_: AdminCaller, brand: ChosenBrand, store: StoreDep) -> StatsOut:
    with store.session() as session:
        return store_stats(session, brand.id)


@router.post("/export", response_model=ExportOut, summary="Write reviewed conversations as training data")
async def export_training_data(body: ExportIn, _: AdminCaller, brand: ChosenBrand) -> ExportOut:
    """Runs the collector's export of one brand (?brand=) into HOUSESTYLE_HOME/exports/<UTC time>; the agents' final
    texts replace drafts. Always redacted: `redact: false` is refused (422), an unredacted export is CLI-only."""
    if not body.redact:
        raise InputError("an unredacted export is written only from the CLI on the server, said loudly: "
                         "`housestyle export --no-redact --out FOLDER`")
    settings = brand.settings
    out = settings.exports_dir / datetime.now(UTC).strftime("api-%Y%m%dT%H%M%S%fZ")
    options = export_options(
        format=body.format,
        out=out,
        since=body.since,
        until=body.until,
        channels=body.channels,
        decisions=list(body.decisions),
        redact=body.redact,
        dedup=body.dedup,
        seed=body.seed,
        brand_id=brand.id,
    )
    manifest = await run_in_threadpool(partial(export_dataset, options, settings=settings, progress=False))
    return ExportOut(path=str(out), summary=manifest.summary(), manifest=manifest.model_dump(mode="json"))
