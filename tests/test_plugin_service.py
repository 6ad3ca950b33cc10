"""The service as an operator sees it: OpenAPI schema, health and readiness, model outages, `housestyle serve`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from collector import recorder
from core.db import session_scope
from core.settings import get_settings
from serving.gateway import ServingGateway
from tests.fixtures.service import RunningService, start_widget_conversation
from tests.fixtures.stores import free_port


def test_openapi_schema_is_valid_and_documents_every_route_with_bearer_auth(plugin_service: RunningService) -> None:
    schema = plugin_service.client().get("/openapi.json").json()
    validate(schema)
    assert {
        "/widget/conversations",
        "/reviews/{draft_id}/edit",
        "/v1/chat/completions",
        "/chatwoot/webhook",
        "/admin/adapters/{version}/promote",
        "/metrics",
        "/ready",
    } <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    edit = schema["paths"]["/reviews/{draft_id}/edit"]["post"]
    assert edit["security"] == [{"HTTPBearer": []}] and "409" in edit["responses"]


def test_health_is_alive_but_not_ready_without_model_servers(plugin_service: RunningService) -> None:
    anonymous = plugin_service.client()
    assert anonymous.get("/health").json() == {"status": "ok"}
    ready = anonymous.get("/ready")
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert ready.json()["database"] is True and ready.json()["model_servers"] is False


@pytest.fixture
def dead_model_server(housestyle_home: Path):
    """A serving gateway attached to a vLLM URL where nothing listens (the model server is down)."""
    settings = get_settings()
    gateway = ServingGateway(
        settings, urls=[f"http://127.0.0.1:{free_port()}"], database_url=settings.resolved_database_url
    )
    yield gateway
    asyncio.run(gateway.stop())


def test_model_servers_down_answer_503_with_retry_after_and_keep_the_customers_message(
    store_url: str, start_service, dead_model_server: ServingGateway
) -> None:
    service = start_service(gateway=dead_model_server, manage_gateway=False)
    widget = service.client("widget")
    conversation = start_widget_conversation(widget, mode="auto")
    for stream in (True, False):
        answer = conversation.send(f"Is anyone there? ({stream})", stream=stream)
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) >= 1 and "no vLLM replica is healthy" in answer.json()["detail"]
    history = conversation.history()
    assert [m["content"] for m in history["messages"]] == ["Is anyone there? (True)", "Is anyone there? (False)"]

    api = service.client("agent").post(
        "/v1/chat/completions",
        json={
            "model": get_settings().public_model_name,
            "messages": [{"role": "user", "content": "Hello from the API"}],
        },
    )
    assert api.status_code == 503 and api.headers["Retry-After"]
    with session_scope(store_url) as session:
        stored = [
            m.content
            for c in session.exec(recorder.select(recorder.Conversation)).scalars()
            for m in recorder.transcript(session, c.id)
            if c.channel == "api"
        ]
    assert stored == ["Hello from the API"]
    assert service.client().get("/ready").status_code == 503


def test_errors_say_what_to_fix_and_never_leak_a_traceback(plugin_service: RunningService) -> None:
    widget, agent = plugin_service.client("widget"), plugin_service.client("agent")
    missing = widget.get("/widget/conversations/not-a-conversation")
    assert missing.status_code == 404 and "POST /widget/conversations" in missing.json()["detail"]
    wrong_model = agent.post(
        "/v1/chat/completions", json={"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}
    )
    assert wrong_model.status_code == 404 and "/v1/models" in wrong_model.json()["detail"]
    bad_mode = widget.post("/widget/conversations", json={"mode": "sometimes"})
    assert bad_mode.status_code == 422 and "Traceback" not in bad_mode.text
    assert agent.get("/v1/models").json()["data"][0]["id"] == get_settings().public_model_name


def test_serve_without_vllm_writes_the_control_file_and_stops_cleanly_on_sigterm(
    store_url: str, housestyle_home: Path
) -> None:
    control_path = housestyle_home / "run" / "serve.json"
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "housestyle"), "serve", "--no-vllm", "--port", "0"],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not control_path.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
            time.sleep(0.1)
        control = json.loads(control_path.read_text())
        assert control["pid"] == process.pid and control_path.stat().st_mode & 0o777 == 0o600
        with httpx.Client(base_url=control["url"]) as client:
            assert client.get("/health").status_code == 200
            as_cli = client.get("/admin/adapters", headers={"Authorization": f"Bearer {control['control_token']}"})
            assert as_cli.status_code == 200 and as_cli.json()["serving"] is None
            assert client.get("/admin/adapters", headers={"Authorization": "Bearer guess"}).status_code == 401
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert not control_path.exists()
    log_lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [line for line in log_lines if line.get("route") == "/admin/adapters"]
    assert [line["status"] for line in access] == [200, 401] and access[0]["key"] == "housestyle-cli"


def test_serve_on_a_home_without_a_base_model_is_one_error_line_naming_the_fix(housestyle_home: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "housestyle"), "serve", "--port", "0"],
        env={**os.environ, "HOUSESTYLE_HOME": str(housestyle_home)}, capture_output=True, text=True, timeout=120,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1, done.stderr[-2000:]
    assert len(errors) == 1 and "housestyle base build" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and '"error"' not in done.stderr
