"""What routes get injected: settings, a store session, the serving gateway, and the caller's key and role."""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlmodel import Session

from collector.db import session_scope
from collector.models import ApiKeyRole
from collector.settings import Settings
from plugin.keys import find_active_key
from plugin.metrics import ServiceMetrics
from plugin.ratelimit import TokenBuckets

bearer = HTTPBearer(auto_error=False, description="An API key from `housestyle keys create`, as `Bearer KEY`.")


class Caller(BaseModel):
    """Who is calling: the key's name (used as agent id and actor), its role, and its row id (None: control token)."""

    name: str
    role: ApiKeyRole
    key_id: int | None = None


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """One store transaction per request, committed before the response is sent."""
    with session_scope(settings.resolved_database_url) as session:
        yield session


# scope="function": the commit happens before the client hears "200", so a failed commit is never reported as done
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_gateway(request: Request) -> Any:
    """The serving gateway (serving.gateway.ServingGateway); None when the service runs without model servers."""
    return request.app.state.gateway


GatewayDep = Annotated[Any, Depends(get_gateway)]


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def authenticate(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The caller behind `Authorization: Bearer KEY`, rate limited per key."""
    if credentials is None or not credentials.credentials:
        raise _unauthorized("send an API key as 'Authorization: Bearer KEY'; `housestyle keys create` makes one")
    token = credentials.credentials
    control_token = request.app.state.control_token
    if control_token and hmac.compare_digest(token.encode(), control_token.encode()):
        request.state.caller = Caller(name="housestyle-cli", role=ApiKeyRole.ADMIN)
        return request.state.caller
    with session_scope(settings.resolved_database_url) as session:
        row = find_active_key(session, token)
        caller = None if row is None else Caller(name=row.name, role=row.role, key_id=row.id)
    if caller is None:
        raise _unauthorized("this API key is unknown or revoked; `housestyle keys list` shows the active keys")
    wait = request.app.state.rate_limits.take(str(caller.key_id))
    if wait > 0:
        raise HTTPException(
            429,
            detail=f"rate limit of {settings.rate_limit_per_second:g} requests/s for key '{caller.name}' exceeded; "
            "retry later or raise HOUSESTYLE_RATE_LIMIT_PER_SECOND",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    request.state.caller = caller
    return caller


def require(*roles: ApiKeyRole) -> Callable[..., Caller]:
    """A dependency letting through callers with one of `roles`; admin keys may do everything."""
    allowed = {*roles, ApiKeyRole.ADMIN}

    def check_role(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        if caller.role not in allowed:
            names = ", ".join(sorted(role.value for role in allowed))
            raise HTTPException(403, detail=f"a {caller.role.value} key cannot do this; it needs a key with role {names}")
        return caller

    check_role.allowed_roles = allowed  # type: ignore[attr-defined]  (read by the role-matrix test and docs)
    return check_role


WidgetCaller = Annotated[Caller, Depends(require(ApiKeyRole.WIDGET))]
ReaderCaller = Annotated[Caller, Depends(require(ApiKeyRole.WIDGET, ApiKeyRole.AGENT))]
AgentCaller = Annotated[Caller, Depends(require(ApiKeyRole.AGENT))]
AdminCaller = Annotated[Caller, Depends(require())]


def new_rate_limits(settings: Settings) -> TokenBuckets:
    return TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
