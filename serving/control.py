"""The control file a running `housestyle serve` leaves in HOME/run/serve.json, and the admin client that reads it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from core.errors import ConflictError, HouseStyleError, InputError, NotFoundError
from core.processes import pid_alive
from core.registry import check_version_id
from core.settings import Settings
from serving.errors import AdapterRejectedError, NoHealthyReplicaError, UpstreamError


class ControlFile(BaseModel):
    """How the CLI reaches the running service: its pid, loopback URL and the admin bearer token."""

    pid: int
    url: str
    control_token: str


def control_file_path(settings: Settings) -> Path:
    return settings.home / "run" / "serve.json"


def write_control_file(settings: Settings, control: ControlFile) -> Path:
    """Write serve.json atomically with mode 0600 (it holds the admin token)."""
    path = control_file_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".serve-", suffix=".json")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(control.model_dump_json())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def remove_control_file(settings: Settings, pid: int | None = None) -> None:
    """Remove serve.json when the service stops (only if it is still ours, when `pid` is given)."""
    path = control_file_path(settings)
    control = read_control_file(settings, require_alive=False)
    if control is not None and pid is not None and control.pid != pid:
        return
    path.unlink(missing_ok=True)


def read_control_file(settings: Settings, *, require_alive: bool = True) -> ControlFile | None:
    """The running service's control record, or None when no service runs on this HOME (stale files are ignored)."""
    path = control_file_path(settings)
    try:
        control = ControlFile.model_validate_json(path.read_text())
    except (OSError, ValidationError):
        return None
    if require_alive and not pid_alive(control.pid):
        return None
    return control


# HTTP status from the service -> the error class the CLI raises (all print as one `error: ...` line)
STATUS_ERRORS: dict[int, type[HouseStyleError]] = {
    400: InputError, 404: NotFoundError, 409: ConflictError, 422: AdapterRejectedError, 503: NoHealthyReplicaError,
}


class AdminClient:
    """Calls the running service's /admin/adapters routes; returns when the change is complete on every replica."""

    def __init__(self, control: ControlFile, *, timeout_s: float = 900.0) -> None:
        self.control = control
        self.client = httpx.Client(
            base_url=control.url, headers={"Authorization": f"Bearer {control.control_token}"}, timeout=timeout_s
        )

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 brand: str | None = None) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, json=body, params={"brand": brand} if brand else None)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the running service at {self.control.url} did not answer ({exc!r}); is it still up?") from None
        if response.status_code in (401, 403):
            raise HouseStyleError(
                f"the service at {self.control.url} refused the control token in {control_file_path_hint()}; "
                "restart `housestyle serve` so it writes a fresh one"
            )
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            error = STATUS_ERRORS.get(response.status_code, UpstreamError)
            raise error(str(detail)) if error is not UpstreamError else UpstreamError(str(detail), response.status_code)
        return response.json()

    def status(self, brand: str | None = None) -> dict[str, Any]:
        """`{"adapters": [...the brand's registry rows...], "serving": ServingStatus as JSON, or None without model
        servers}`."""
        return self._request("GET", "/admin/adapters", brand=brand)

    def promote(self, version: str, actor: str, reason: str | None) -> dict[str, Any]:
        return self._request("POST", f"/admin/adapters/{version_segment(version)}/promote",
                             {"actor": actor, "reason": reason})

    def rollback(self, version: str | None, actor: str, reason: str | None, brand: str | None = None) -> dict[str, Any]:
        if version is not None:
            check_version_id(version)
        return self._request("POST", "/admin/adapters/rollback", {"version": version, "actor": actor, "reason": reason},
                             brand=brand)

    def canary(self, version: str, share: float, actor: str, reason: str | None) -> dict[str, Any]:
        return self._request(
            "POST", f"/admin/adapters/{version_segment(version)}/canary", {"share": share, "actor": actor, "reason": reason}
        )

    def close(self) -> None:
        self.client.close()


def version_segment(version: str) -> str:
    """A version id as one URL path segment: checked, then percent-encoded all the same (belt and braces)."""
    return quote(check_version_id(version), safe="")


def control_file_path_hint() -> str:
    return "HOUSESTYLE_HOME/run/serve.json"
