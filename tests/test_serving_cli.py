"""`housestyle adapters`: shows and changes versions in the registry, or on the running service when there is one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.db import session_scope
from core.models import AdapterStatus
from core.registry import get_adapter
from core.settings import get_settings
from plugin.cli import app
from serving.control import ControlFile, control_file_path, read_control_file, write_control_file
from tests.fixtures.stores import current_store
from tests.fixtures.vllm import register_adapter_folder


def housestyle(*args: str) -> str:
    result = CliRunner().invoke(app, ["adapters", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def status_of(version: str) -> AdapterStatus:
    with session_scope(current_store()) as session:
        return get_adapter(session, version).status


def test_without_a_running_service_the_cli_changes_the_registry(
    housestyle_home: Path, lora_adapters: dict[str, Path], serving_base: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HOUSESTYLE_BASE_MODEL", str(serving_base))
    get_settings.cache_clear()
    a = register_adapter_folder(lora_adapters["gadgetcorp"], serving_base)
    b = register_adapter_folder(lora_adapters["other"], serving_base)

    listing = housestyle("list")
    assert a in listing and b in listing and "candidate" in listing and "no running service" in listing
    assert "next `housestyle serve` loads it" in housestyle("promote", a, "--actor", "ana", "--reason", "eval ok")
    housestyle("promote", b)
    assert (status_of(a), status_of(b)) == (AdapterStatus.RETIRED, AdapterStatus.LIVE)
    assert f"{a} is live" in housestyle("rollback", "--reason", "complaints")
    assert (status_of(a), status_of(b)) == (AdapterStatus.LIVE, AdapterStatus.RETIRED)
    assert "25% of new conversations" in housestyle("canary", b, "--share", "0.25")
    assert status_of(b) == AdapterStatus.CANARY and "25%" in housestyle("list")
    housestyle("canary", b, "--share", "0")
    assert status_of(b) == AdapterStatus.CANDIDATE
    history = housestyle("history", a)
    assert "promote" in history and "ana" in history and "rollback" in history


def test_cli_errors_are_one_line_naming_the_fix(housestyle_home: Path):
    env = {**os.environ, "HOUSESTYLE_HOME": str(housestyle_home)}
    cli = Path(sys.executable).parent / "housestyle"
    result = subprocess.run([str(cli), "adapters", "promote", "v9999-deadbeef"], capture_output=True, text=True,
                            check=False, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: adapter version v9999-deadbeef is not registered; `housestyle adapters list` shows them"
    ]


def test_control_file_is_private_and_ignored_once_its_process_is_gone(housestyle_home: Path):
    settings = get_settings()
    write_control_file(settings, ControlFile(pid=os.getpid(), url="http://127.0.0.1:1", control_token="secret"))
    assert control_file_path(settings).stat().st_mode & 0o777 == 0o600
    assert read_control_file(settings).control_token == "secret"
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    write_control_file(settings, ControlFile(pid=int(finished.stdout), url="http://127.0.0.1:1", control_token="x"))
    assert read_control_file(settings) is None


@pytest.mark.vllm
@pytest.mark.slow
def test_with_a_running_service_the_cli_swaps_on_every_replica(
    serving_settings, vllm_server, lora_adapters, start_service
):
    from serving.gateway import ServingGateway

    a = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)
    b = register_adapter_folder(lora_adapters["other"], vllm_server.base_model)
    service = start_service(gateway=ServingGateway(serving_settings))
    write_control_file(serving_settings, ControlFile(pid=os.getpid(), url=service.url, control_token="test-control-token"))
    gateway = service.app.state.gateway

    assert "live=base model" in housestyle("list")
    assert f"{a} is live on 1 replica(s)" in housestyle("promote", a, "--reason", "eval ok")
    assert gateway.status().live == a and gateway.resolve("any").version == a
    housestyle("canary", b, "--share", "0.5")
    assert gateway.status().canary == b and status_of(b) == AdapterStatus.CANARY
    listing = housestyle("list")
    assert f"live={a}" in listing and f"canary={b}" in listing and "healthy" in listing
    housestyle("promote", b)
    assert f"{a} is live" in housestyle("rollback")
    assert (gateway.status().live, status_of(a), status_of(b)) == (a, AdapterStatus.LIVE, AdapterStatus.RETIRED)
