"""A version id is a version id: `housestyle adapters ... '../refresh?'` is refused before any URL is built, and the
admin API's `{version}` path parameters accept the same pattern only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from core.db import session_scope
from core.errors import InputError
from core.models import TrainingRun
from core.registry import check_version_id
from core.settings import get_settings
from serving import remote
from serving.control import AdminClient, ControlFile, read_control_file, version_segment, write_control_file
from tests.fixtures.stores import current_store

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(
    ("version", "accepted"),
    [
        ("v0003-1a2b3c4d", True),
        ("my_adapter.v2", True),
        ("x" * 100, True),
        ("x" * 101, False),
        ("", False),
        ("..", False),  # a path segment that walks up
        (".hidden", False),
        ("../refresh?", False),
        ("v1/promote", False),
        ("v1%2Fx", False),
        ("v 1", False),
        ("v1\n", False),
        ("vé", False),
        ("-v1", False),  # would read as a flag somewhere
    ],
)
def test_a_version_id_is_letters_digits_dots_underscores_and_dashes(version: str, accepted: bool) -> None:
    if accepted:
        assert check_version_id(version) == version and version_segment(version) == version
    else:
        with pytest.raises(InputError, match="not an adapter version id"):
            check_version_id(version)


def housestyle(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOUSESTYLE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "plugin.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120, check=False)


def refresh_runs(url: str) -> list[TrainingRun]:
    with session_scope(url) as session:
        return list(session.exec(select(TrainingRun)).all())


def test_the_cli_refuses_a_path_as_a_version_before_reaching_the_running_service(
    housestyle_home: Path, start_service
) -> None:
    store_url = current_store()
    service = start_service()
    settings = get_settings()
    write_control_file(settings, ControlFile(pid=os.getpid(), url=service.url, control_token="test-control-token"))

    # the command from the report: it used to start a refresh and print success
    result = housestyle("adapters", "canary", "../refresh?", "--share", "0.1", home=settings.home)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: '../refresh?' is not an adapter version id: use 1 to 100 letters, digits, '.', '_' or '-', starting "
        "with a letter or digit (e.g. v0003-1a2b3c4d; `housestyle adapters list` shows them)"
    ]
    assert refresh_runs(store_url) == []  # no refresh started behind the user's back
    # promote and rollback take the same way in (serving.remote, then serving.control.AdminClient)
    for change in (lambda: remote.promote_version("../refresh?", actor="t", reason=None, settings=settings),
                   lambda: remote.rollback_version("../refresh?", actor="t", reason=None, settings=settings),
                   lambda: AdminClient(read_control_file(settings)).promote("..", "t", None)):
        with pytest.raises(InputError, match="not an adapter version id"):
            change()
    assert refresh_runs(store_url) == []


def test_the_admin_api_refuses_a_version_that_is_not_a_version_id(plugin_service) -> None:
    admin = plugin_service.client("admin")
    for path in ["v1%3Fx", "v%201", "%2E%2E", "-v1", "x" * 101]:
        for action, body in [("promote", {}), ("canary", {"share": 0.1})]:
            answer = admin.post(f"/admin/adapters/{path}/{action}", json=body)
            assert answer.status_code == 422, (path, action, answer.text)
            assert answer.json()["detail"][0]["loc"] == ["path", "version"]
    # an encoded '/' splits the path: no route matches, nothing is started
    assert admin.post("/admin/adapters/..%2Frefresh/promote", json={}).status_code == 404
    assert refresh_runs(get_settings().resolved_database_url) == []
