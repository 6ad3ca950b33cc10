"""The app factory: the FastAPI service a support platform talks to, wired to the store and the serving gateway."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from core.db import open_store
from core.group_commit import GroupCommit
from core.locks import close_runs_of_gone_holders
from core.settings import Settings
from plugin.api.brand_scope import BrandDirectory
from plugin.api.deps import KeyCache, new_rate_limits
from plugin.api.errors import install_error_handlers
from plugin.api.middleware import AccessLogAndMetrics, BodySizeLimit
from plugin.api.routes import admin, chatwoot, coverage, dashboard, health, openai, pages, refresh, reviews, widget
from plugin.api.schemas import CONVERSATION_TOKEN_HEADER, ERROR_RESPONSES
from plugin.connectors.chatwoot import close_client as close_chatwoot_client
from plugin.loop.scheduler import LoopScheduler
from plugin.metrics import ServiceMetrics
from plugin.redaction_worker import RedactionWorker
from plugin.redrafter import Redrafter


def create_app(
    settings: Settings,
    *,
    gateway: Any = None,
    manage_gateway: bool = True,
    control_token: str | None = None,
) -> FastAPI:
    """Build the service.

    gateway: a `serving.gateway.ServingGateway`, or None to run without model servers (generation answers 503).
    manage_gateway: stop the gateway with the app, and start it unless it is started already (False when the caller
        owns its lifetime).
    control_token: a secret that acts as an admin key, for the `housestyle adapters` CLI on this machine.
    """
    metrics = ServiceMetrics(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            open_store(settings.resolved_database_url)
            # run rows a process that died left `running` are closed now, not when their lock is next taken
            await asyncio.to_thread(close_runs_of_gone_holders, settings.resolved_database_url)
            if settings.redact_at_ingest:  # redacts new conversations in its own thread, off the request path
                app.state.redaction_worker = RedactionWorker(settings)
                app.state.redaction_worker.start()
            if gateway is not None and manage_gateway and not gateway.started:
                await gateway.start()
            if gateway is not None:
                # timed / review-count refreshes and the automatic rollback guard
                app.state.scheduler = LoopScheduler(settings, gateway)
                app.state.scheduler_task = asyncio.create_task(app.state.scheduler.run())
                # customer messages a model outage left unanswered get their draft once a model is back
                app.state.redrafter = Redrafter(app)
                app.state.redrafter_task = asyncio.create_task(app.state.redrafter.run())
        except BaseException as exc:
            app.state.startup_error = exc
            if gateway is not None and manage_gateway:
                await gateway.stop()  # a half-started vLLM must not outlive us
            raise
        try:
            yield
        finally:
            try:
                for task in (app.state.scheduler_task, app.state.redrafter_task):
                    if task is not None:
                        task.cancel()
                if app.state.scheduler_task is not None:  # its `finally` closes the rows of refreshes cut short
                    await asyncio.gather(app.state.scheduler_task, return_exceptions=True)
                if app.state.redaction_worker is not None:
                    await asyncio.to_thread(app.state.redaction_worker.stop)
                await asyncio.to_thread(app.state.store_writer.close)  # what is queued is stored before we stop
                await close_chatwoot_client(app)
                if gateway is not None and manage_gateway:
                    await gateway.stop()
            finally:
                if app.state.on_shutdown is not None:
                    app.state.on_shutdown()

    app = FastAPI(
        title="HouseStyle",
        version="0.1.0",
        summary="Chat widget, agent review, OpenAI-compatible and Chatwoot API of a support assistant that learns "
        "your company's voice.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.control_token = control_token
    app.state.scheduler = None  # plugin.loop.scheduler.LoopScheduler once the gateway runs
    app.state.scheduler_task = None
    app.state.redrafter = None  # plugin.redrafter.Redrafter once the gateway runs
    app.state.redrafter_task = None
    app.state.redaction_worker = None  # plugin.redaction_worker.RedactionWorker while HOUSESTYLE_REDACT_AT_INGEST
    app.state.on_shutdown = None  # called last when the app stops (serve: remove the control file)
    app.state.metrics = metrics
    if gateway is not None:
        metrics.watch_fingerprints(gateway.fingerprints.mismatches)
    app.state.rate_limits = new_rate_limits(settings)
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.brands = BrandDirectory(settings, ttl_s=settings.key_cache_seconds, gateway=gateway)
    # sqlite has no row locks: claims and reviews of this process go one at a time
    app.state.review_lock = threading.Lock()
    app.state.background_tasks = set()  # type: set[asyncio.Task]
    # one writer thread that commits the API calls' records in batches (group commit)
    app.state.store_writer = GroupCommit(settings.resolved_database_url)

    for module in (widget, reviews, openai, chatwoot, admin, coverage, refresh, dashboard, health, pages):
        app.include_router(module.router)
    pages.mount_static_files(app)  # the web UI's CSS and JS
    install_error_handlers(app)

    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.widget_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", CONVERSATION_TOKEN_HEADER],
        max_age=600,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(AccessLogAndMetrics, metrics=metrics)
    return app
