"""Running the service: vLLM (through the serving gateway) and the API under uvicorn, stopped together, no orphans.

The gateway starts first, outside uvicorn, so a model server that cannot start is one `error:` line; the app's
lifespan then only stops it (uvicorn re-raises SIGTERM after its shutdown, so the lifespan is where cleanup runs).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal

import uvicorn
import uvloop

from core.db import open_store
from core.errors import HouseStyleError
from core.settings import Settings
from plugin.api.app import create_app
from plugin.jsonlog import configure_json_logging
from serving.control import ControlFile, remove_control_file, write_control_file
from serving.gateway import ServingGateway


async def _start_gateway(gateway: ServingGateway) -> None:
    """Start the model servers before the API, so a failure is one clear error; Ctrl-C or SIGTERM meanwhile stops
    whatever had started (a half-started vLLM must not outlive us)."""
    loop = asyncio.get_running_loop()
    starting = asyncio.current_task()
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
        loop.add_signal_handler(number, starting.cancel)
    try:
        await gateway.start()
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None  # gateway.start stopped what it had started
    finally:
        for number in signals:
            loop.remove_signal_handler(number)


async def _serve(server: uvicorn.Server, settings: Settings, control_token: str, gateway: ServingGateway | None) -> None:
    if gateway is not None:
        await _start_gateway(gateway)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        url = f"http://{host}:{port}"
        write_control_file(settings, ControlFile(pid=os.getpid(), url=url, control_token=control_token))
        logging.getLogger("housestyle.serve").info(
            "HouseStyle serving on %s (model %s)", url, settings.public_model_name
        )
    await serving


def run_service(settings: Settings, *, host: str, port: int, with_vllm: bool = True) -> None:
    """Start the gateway (managed vLLM or HOUSESTYLE_VLLM_URLS) and the API; Ctrl-C or SIGTERM stops both."""
    configure_json_logging()
    open_store(settings.resolved_database_url)
    gateway = ServingGateway(settings, database_url=settings.resolved_database_url) if with_vllm else None
    control_token = secrets.token_urlsafe(32)
    app = create_app(settings, gateway=gateway, control_token=control_token)
    # the control file goes when the app shuts down: uvicorn re-raises SIGTERM after shutdown, so code after
    # `serve()` may never run
    app.state.on_shutdown = lambda: remove_control_file(settings, pid=os.getpid())
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=30,
            proxy_headers=True,
            forwarded_allow_ips=settings.trusted_proxies,  # whose X-Forwarded-For names the client
            # idle keep-alive connections live longer than a busy client takes between a customer's two calls
            timeout_keep_alive=75,
        )
    )
    # uvloop: the loop's own share of each request (sockets, callbacks) is what the service spends most on; uvicorn
    # picks it only when it makes the loop itself, and here the gateway starts first on ours
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(server, settings, control_token, gateway))
    if not server.started:
        error = getattr(app.state, "startup_error", None)
        raise HouseStyleError(f"the service did not start: {error or 'see the log above'}")
