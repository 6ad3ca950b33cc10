"""What routes get injected: settings, a store session, the serving gateway, and the caller's key and role.

The dependencies that only read the app's state are `async def`: FastAPI runs a plain `def` dependency in a worker
thread, and two such hand-offs a request were a sixth of the service's CPU under load (bench/plugin_load.py).
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from core.db import session_scope
from core.errors import InputError
from core.models import ApiKeyRole
from core.settings import Settings
from plugin.api.keys import find_active_key, hash_key
from plugin.api.ratelimit import RateLimits, TokenBuckets
from plugin.metrics import ServiceMetrics

bearer = HTTPBearer(auto_error=False, description="An API key from `housestyle keys create`, as `Bearer KEY`.")


class Caller(BaseModel):
    """Who is calling: the key's name (used as agent id and actor), its role, and its row id (None: control token)."""

    name: str
    role: ApiKeyRole
    key_id: int | None = None
    brands: tuple[int, ...] | None = None  # the brands the key may act on; None: every brand

    def may_act_on(self, brand_id: int) -> bool:
        return self.brands is None or brand_id in self.brands

    def check_brand(self, brand_id: int, missing: Exception) -> None:
        """Raise `missing` (the route's own 404) for an object of a brand this key may not act on."""
        if not self.may_act_on(brand_id):
            raise missing

    @property
    def is_local_cli(self) -> bool:
        """The `housestyle` CLI on this machine, through the running service's control token."""
        return self.key_id is None

    def acting_as(self, claimed: str | None) -> str:
        """Who acted: the key's name. A body may repeat it; naming someone else is refused (the local CLI alone
        names the user who ran it, as its --actor)."""
        if self.is_local_cli:
            return claimed.strip() if claimed and claimed.strip() else self.name
        if claimed is None or claimed == self.name:
            return self.name
        raise InputError(f"this key acts as '{self.name}', not '{claimed}': who acted comes from the API key; "
                         "leave the name out (or use that person's own key)")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


class Store:
    """The store this app records into; `with store.session() as session:` is one transaction.

    Routes open the transaction in their own body rather than through a yield dependency: under load, a commit
    that waits for a free worker thread while other threads wait for SQLite's write lock would deadlock.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def session(self) -> AbstractContextManager[Session]:
        return session_scope(self.database_url)


async def get_store(settings: SettingsDep) -> Store:
    return Store(settings.resolved_database_url)


StoreDep = Annotated[Store, Depends(get_store)]


async def get_gateway(request: Request) -> Any:
    """The serving gateway (serving.gateway.ServingGateway); None when the service runs without model servers."""
    return request.app.state.gateway


GatewayDep = Annotated[Any, Depends(get_gateway)]


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _lookup_key(database_url: str, token: str) -> Caller | None:
    with session_scope(database_url) as session:
        row = find_active_key(session, token)
        if row is None:
            return None
        brands = None if row.brands is None else tuple(int(b) for b in row.brands)
        return Caller(name=row.name, role=row.role, key_id=row.id, brands=brands)


async def authenticate(
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
    limits: RateLimits = request.app.state.rate_limits
    caller = request.app.state.key_cache.get(token)
    if caller is None:
        guessing = limits.unknown_keys.wait(client_address(request)) if limits.unknown_keys else 0.0
        if guessing > 0:  # too many unknown keys from this address: refused before any store lookup
            raise too_many(f"too many unknown API keys from {client_address(request)}; retry later", guessing)
        caller = await run_in_threadpool(_lookup_key, settings.resolved_database_url, token)
        if caller is not None:
            request.app.state.key_cache.put(token, caller)
    if caller is None:
        if limits.unknown_keys is not None:
            limits.unknown_keys.take(client_address(request))
        raise _unauthorized("this API key is unknown or revoked; `housestyle keys list` shows the active keys")
    if caller.role == ApiKeyRole.WIDGET:  # one public key for every customer: limit each client address instead
        address = client_address(request)
        wait = limits.clients.take(address)
        refused = (f"rate limit of {settings.widget_rate_per_client:g} requests/s from {address} exceeded; retry "
                   "later (an operator can raise HOUSESTYLE_WIDGET_RATE_PER_CLIENT)")
    else:
        wait = limits.keys.take(str(caller.key_id))
        refused = (f"rate limit of {settings.rate_limit_per_second:g} requests/s for key '{caller.name}' exceeded; "
                   "retry later or raise HOUSESTYLE_RATE_LIMIT_PER_SECOND")
    if wait > 0:
        raise too_many(refused, wait)
    request.state.caller = caller
    return caller


def too_many(detail: str, wait: float) -> HTTPException:
    return HTTPException(429, detail=detail, headers={"Retry-After": str(max(1, math.ceil(wait)))})


def client_address(request: Request) -> str:
    """The caller's address (uvicorn puts a trusted proxy's X-Forwarded-For here: HOUSESTYLE_TRUSTED_PROXIES)."""
    return request.client.host if request.client else "unknown"


def limit_conversation(request: Request, caller: Caller, conversation_id: str) -> None:
    """A widget's calls on one conversation share one bucket, so one customer's loop cannot crowd out the rest."""
    if caller.role != ApiKeyRole.WIDGET:
        return
    settings = request.app.state.settings
    wait = request.app.state.rate_limits.conversations.take(conversation_id)
    if wait > 0:
        raise too_many(f"rate limit of {settings.widget_rate_per_conversation:g} requests/s on this conversation "
                       "exceeded; wait for the reply before sending more", wait)


def require(*roles: ApiKeyRole) -> Callable[..., Caller]:
    """A dependency letting through callers with one of `roles`; admin keys may do everything."""
    allowed = {*roles, ApiKeyRole.ADMIN}

    async def check_role(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
        if caller.role not in allowed:
            names = ", ".join(sorted(role.value for role in allowed))
            raise HTTPException(
                403, detail=f"a {caller.role.value} key cannot do this; it needs a key with role {names}"
            )
        return caller

    check_role.allowed_roles = allowed  # type: ignore[attr-defined]  (read by the role-matrix test and docs)
    return check_role


WidgetCaller = Annotated[Caller, Depends(require(ApiKeyRole.WIDGET))]
ReaderCaller = Annotated[Caller, Depends(require(ApiKeyRole.WIDGET, ApiKeyRole.AGENT))]
AgentCaller = Annotated[Caller, Depends(require(ApiKeyRole.AGENT))]
AdminCaller = Annotated[Caller, Depends(require())]


class KeyCache:
    """Recently seen good keys, so a busy key costs no store round trip; a revoked key stops within `ttl_s`."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Caller, float]] = {}

    def get(self, token: str) -> Caller | None:
        if self.ttl_s <= 0:
            return None
        entry = self._entries.get(hash_key(token))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, token: str, caller: Caller) -> None:
        if self.ttl_s > 0:
            if len(self._entries) > 10_000:  # bounded: drop everything rather than grow without end
                self._entries.clear()
            self._entries[hash_key(token)] = (caller, time.monotonic() + self.ttl_s)


def new_rate_limits(settings: Settings) -> RateLimits:
    return RateLimits(
        keys=TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst),
        clients=TokenBuckets(settings.widget_rate_per_client, settings.widget_burst_per_client),
        conversations=TokenBuckets(settings.widget_rate_per_conversation, settings.widget_burst_per_conversation),
        unknown_keys=TokenBuckets(settings.unknown_key_rate_per_client, settings.unknown_key_burst_per_client),
    )
