"""THE interface the plugin uses: route OpenAI chat requests to vLLM replicas and swap adapter versions safely.

    gateway = ServingGateway.from_settings(get_settings())
    await gateway.start()                       # starts managed vLLM or attaches to HOUSESTYLE_VLLM_URLS
    route, body = await gateway.chat(request, conversation_key="conv-42")
    route, chunks = await gateway.stream_chat(request, conversation_key="conv-42")
    async for chunk in chunks: ...              # OpenAI chat.completion.chunk dicts; always iterate or aclose()
    await gateway.promote("v0003-1a2b3c4d", actor="ana", reason="eval passed")
    await gateway.stop()

Every response names the adapter version that produced it: `route.version` (None = base model), also written into
the body's `system_fingerprint` as `housestyle:<version|base>`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from typing import Any

import httpx
from pydantic import BaseModel

from collector.db import session_scope
from collector.errors import ConflictError, InputError
from collector.models import AdapterStatus
from collector.registry import adapters_with_status, live_adapter
from collector.settings import Settings
from serving import lifecycle
from serving.errors import NoHealthyReplicaError, SwapFailedError, UpstreamError
from serving.replicas import Replica, ReplicaPool, ReplicaStatus, upstream_message
from serving.routing import LoadedVersion, Route, RoutingTable
from serving.validation import validate_adapter
from serving.vllm_server import BASE_SERVED_NAME, VllmServer, resolved_base_model

log = logging.getLogger("housestyle.serving")

VLLM_NAME_PREFIX = "hs-"  # + a tag of the store: services on different stores can share one vLLM
# errors that mean the replica is gone (not that the request was bad): take it out and try another one
REPLICA_DOWN_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                       httpx.ConnectTimeout, httpx.PoolTimeout)


class ServingStatus(BaseModel):
    """What `GET /admin/adapters` and `housestyle adapters list` show about serving right now."""

    ready: bool
    public_model: str
    base_model: str
    live: str | None
    canary: str | None
    canary_share: float
    vllm_names: dict[str, str]  # version -> the vLLM name it is loaded under
    in_flight: dict[str, int]  # vLLM name -> requests in flight
    replicas: list[ReplicaStatus]


class SwapResult(BaseModel):
    """The outcome of promote / rollback / canary, returned once the change is complete on every healthy replica."""

    action: str
    version: str | None
    previous: str | None
    replicas: list[str]
    flip_ms: float = 0.0  # from the call to the moment new requests got the new version
    total_ms: float = 0.0  # including draining the old version's requests and unloading it


def fingerprint(route: Route) -> str:
    return f"housestyle:{route.version or 'base'}"


class ChatStream:
    """OpenAI chat.completion.chunk dicts from one replica, with the public model name and the version fingerprint."""

    def __init__(self, gateway: ServingGateway, route: Route, response: httpx.Response) -> None:
        self.route = route
        self._gateway = gateway
        self._response = response
        self._replica: Replica = response.extensions["housestyle_replica"]
        self._lines = response.aiter_lines()
        self._closed = False

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> dict:
        if self._closed:
            raise StopAsyncIteration
        try:
            chunk = await self._next_chunk()
        except BaseException:
            await self.aclose()
            raise
        if chunk is None:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def _next_chunk(self) -> dict | None:
        url = self._replica.url
        try:
            async for line in self._lines:
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return None
                chunk = json.loads(data)
                if "error" in chunk:
                    error = chunk["error"]
                    raise UpstreamError(f"vLLM failed mid-stream: {error.get('message', error) if isinstance(error, dict) else error}")
                chunk["model"] = self.route.public_model
                chunk["system_fingerprint"] = fingerprint(self.route)
                return chunk
        except httpx.HTTPError as exc:
            if isinstance(exc, REPLICA_DOWN_ERRORS):
                self._gateway.pool.mark_unhealthy(self._replica, f"stream broke: {exc!r}")
            raise UpstreamError(f"vLLM at {url} failed mid-stream ({exc!r}); the reply is incomplete") from None
        raise UpstreamError(f"vLLM at {url} ended the stream without [DONE]; the reply is incomplete")

    async def aclose(self) -> None:
        """Stop reading and release the replica connection and the version's in-flight count (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._replica.in_flight -= 1
        try:
            await self._response.aclose()
        finally:
            await self._gateway.routes.release(self.route)


class ServingGateway:
    """Routes chat requests to the least busy healthy vLLM replica and hot-swaps adapters with no failed request."""

    def __init__(self, settings: Settings, *, urls: list[str] | None = None, database_url: str | None = None) -> None:
        self.settings = settings
        self.database_url = database_url or settings.resolved_database_url
        self.managed = not (urls or settings.vllm_urls)
        self.api_key = settings.vllm_api_key or (secrets.token_hex(24) if self.managed else None)
        self.servers: list[VllmServer] = []
        if self.managed:
            for index in range(settings.vllm_replicas):
                port = settings.vllm_port + index if settings.vllm_port else None
                self.servers.append(VllmServer(settings, port=port, api_key=self.api_key))
            urls = [server.url for server in self.servers]
        else:
            urls = urls or [url.strip() for url in settings.vllm_urls.split(",") if url.strip()]
        self.pool = ReplicaPool(
            [Replica(url, self.api_key) for url in urls],
            health_interval_s=settings.health_interval_s,
            on_recovered=self._reload_replica,
        )
        self.routes = RoutingTable(settings.public_model_name, BASE_SERVED_NAME)
        self.base_model = resolved_base_model(settings) if (self.managed or settings.base_model) else ""
        # vLLM names this service owns: only these are ever unloaded as leftovers when a replica rejoins
        self.name_prefix = f"{VLLM_NAME_PREFIX}{hashlib.sha256(self.database_url.encode()).hexdigest()[:6]}-"
        self._swap_lock = asyncio.Lock()
        self._repair_lock = asyncio.Lock()
        self._started = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ServingGateway:
        return cls(settings)

    # ---- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start (managed) or attach to the replicas, load the registry's live and canary versions, begin health checks.

        Raises VllmStartError (managed server died/timed out, with its log tail) or NoHealthyReplicaError (attach mode,
        nothing answers).
        """
        try:
            if self.servers:
                await asyncio.gather(*(server.start() for server in self.servers))
                for server in self.servers:
                    server.supervise()
            await self._discover_base()
        except BaseException:
            await self.stop()  # a half-started set of servers must not outlive a failed start
            raise
        await self._restore_from_registry()
        await self.pool.check_once()
        if not self.pool.healthy():
            await self.stop()
            raise NoHealthyReplicaError(
                f"none of the vLLM replicas {', '.join(r.url for r in self.pool.replicas)} is healthy; "
                "check HOUSESTYLE_VLLM_URLS and that the servers are running"
            )
        self.pool.start()
        self._started = True

    async def stop(self) -> None:
        """Stop health checks, close the upstream clients and stop managed vLLM servers (no orphans)."""
        self._started = False
        await self.pool.close()
        await asyncio.gather(*(server.stop() for server in self.servers))

    def ready(self) -> bool:
        """True when at least one replica is healthy with the live (and canary) versions loaded."""
        return self._started and bool(self.pool.healthy())

    async def _restore_from_registry(self) -> None:
        """Fill the routing table from the registry (live + canary); a version that fails validation is skipped."""
        with session_scope(self.database_url) as session:
            live = live_adapter(session)
            canaries = adapters_with_status(session, AdapterStatus.CANARY)
            wanted = [(live, "live")] + [(canary, "canary") for canary in canaries[:1]]
        for adapter, role in wanted:
            if adapter is None:
                continue
            try:
                validated = validate_adapter(
                    adapter.path, served_base_model=await self._served_base(), max_lora_rank=self.settings.max_lora_rank
                )
            except InputError as exc:
                log.error("not serving %s version %s: %s", role, adapter.version, exc)
                continue
            loaded = LoadedVersion(version=adapter.version, vllm_name=self._new_vllm_name(adapter.version),
                                   path=validated.path)
            if role == "live":
                self.routes.live = loaded
            else:
                self.routes.canary, self.routes.canary_share = loaded, adapter.canary_share

    async def _reload_replica(self, replica: Replica) -> None:
        """A replica (re)joins: make it serve exactly the routing table's names (a restarted vLLM has none loaded)."""
        async with self._swap_lock:
            listed = {model.id for model in await replica.list_models() if model.parent is not None}
            wanted = {loaded.vllm_name: loaded for loaded in self.routes.names_in_use()}
            for name in listed - wanted.keys():
                if name.startswith(self.name_prefix):  # ours, left from a swap while this replica was out: free it
                    await replica.unload_adapter(name)
            for name, loaded in wanted.items():
                if name not in listed:
                    await replica.load_adapter(name, loaded.path)
            replica.loaded_adapters = set(wanted)

    async def _discover_base(self) -> None:
        """Attach mode: learn the base model's served name (and path, unless configured) from `/v1/models`."""
        if self.managed:
            return
        for replica in self.pool.replicas:
            try:
                base = await replica.base_model()
            except UpstreamError:
                continue
            self.routes.base_vllm_name = base.id
            self.base_model = self.base_model or base.root or base.id
            return
        raise NoHealthyReplicaError(
            f"none of the vLLM replicas {', '.join(r.url for r in self.pool.replicas)} answers /v1/models; "
            "check HOUSESTYLE_VLLM_URLS, HOUSESTYLE_VLLM_API_KEY and that the servers are running"
        )

    async def _served_base(self) -> str | None:
        return self.base_model or None

    def _new_vllm_name(self, version: str) -> str:
        # vLLM caches adapters by name: a name is never reused, even for the same version loaded again
        return f"{self.name_prefix}{version}-{secrets.token_hex(3)}"

    async def _repair(self, replica: Replica, vllm_name: str) -> bool:
        """Reload one of our names that a healthy replica no longer knows (unloaded from outside, or a restart the
        health check has not seen yet). True when the replica serves it again; False when it is not ours to load."""
        loaded = next((v for v in self.routes.names_in_use() if v.vllm_name == vllm_name), None)
        if loaded is None:
            return False
        async with self._repair_lock:
            try:
                if vllm_name not in {model.id for model in await replica.list_models()}:
                    log.warning("replica %s lost %s; loading it again", replica.url, vllm_name)
                    await replica.load_adapter(vllm_name, loaded.path)
            except UpstreamError as exc:
                log.warning("replica %s could not load %s again: %s", replica.url, vllm_name, exc)
                return False
        return True

    # ---- requests ---------------------------------------------------------------------------------------------

    def resolve(self, conversation_key: str | None = None) -> Route:
        """The route a new request for this conversation would take now (canary split is sticky per key)."""
        return self.routes.resolve(conversation_key)

    async def chat(self, request: dict[str, Any], *, conversation_key: str | None = None) -> tuple[Route, dict]:
        """Send a non-streaming OpenAI chat request; return its route and the response with the public model name.

        Raises NoHealthyReplicaError (no replica can take it) or UpstreamError (vLLM refused it: `status_code`).
        """
        route = self.routes.acquire(conversation_key)
        try:
            body = {**request, "model": route.vllm_model, "stream": False}
            response = await self._send(body, stream=False)
            try:
                payload = response.json()
            finally:
                await response.aclose()
            payload["model"] = route.public_model
            payload["system_fingerprint"] = fingerprint(route)
            return route, payload
        finally:
            await self.routes.release(route)

    async def stream_chat(
        self, request: dict[str, Any], *, conversation_key: str | None = None
    ) -> tuple[Route, ChatStream]:
        """Start a streaming chat request; return its route and a ChatStream of chunk dicts (`[DONE]` is not yielded).

        Errors before the first byte raise here (NoHealthyReplicaError, UpstreamError). A replica dying mid-stream
        makes the iteration raise UpstreamError (never hang). The version stays counted in flight until the stream
        ends or `aclose()` is called (call it in a `finally` if you may stop early), so a swap waits for it.
        """
        route = self.routes.acquire(conversation_key)
        try:
            body = {**request, "model": route.vllm_model, "stream": True}
            response = await self._send(body, stream=True)
        except BaseException:
            await self.routes.release(route)
            raise
        return route, ChatStream(self, route, response)

    async def _send(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST to the least busy healthy replica; a replica that is down is taken out and the next one tried."""
        tried: set[str] = set()
        repaired: set[str] = set()
        while True:
            replica = self.pool.pick(exclude=tried)
            tried.add(replica.url)
            replica.in_flight += 1
            try:
                request = replica.client.build_request("POST", "/v1/chat/completions", json=body)
                response = await replica.client.send(request, stream=True)
            except REPLICA_DOWN_ERRORS as exc:
                replica.in_flight -= 1
                self.pool.mark_unhealthy(replica, f"request failed: {exc!r}")
                continue
            except BaseException:
                replica.in_flight -= 1
                raise
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                replica.in_flight -= 1
                if response.status_code == 404 and body["model"] in upstream_message(response):
                    # the replica lost the adapter: load it again there and retry once, else take the replica out
                    if replica.url not in repaired and await self._repair(replica, body["model"]):
                        repaired.add(replica.url)
                        tried.discard(replica.url)
                        continue
                    self.pool.mark_unhealthy(replica, f"does not know {body['model']}")
                    continue
                raise UpstreamError(f"vLLM refused the request: {upstream_message(response)}", response.status_code)
            if not stream:
                try:
                    await response.aread()
                except REPLICA_DOWN_ERRORS as exc:
                    self.pool.mark_unhealthy(replica, f"response broke: {exc!r}")
                    await response.aclose()
                    continue
                finally:
                    replica.in_flight -= 1
            else:
                response.extensions["housestyle_replica"] = replica
            return response

    # ---- adapter versions -------------------------------------------------------------------------------------

    async def promote(self, version: str, *, actor: str = "system", reason: str | None = None) -> SwapResult:
        """Make `version` live on every replica with no failed request; the old version is retired (kept for rollback).

        Raises AdapterRejectedError (validation; recorded as rejected), SwapFailedError (a replica failed; the new
        version is unloaded everywhere), NoHealthyReplicaError. The live version keeps serving on any failure.
        """
        return await self._make_live(version, action="promote", actor=actor, reason=reason)

    async def rollback(self, version: str | None = None, *, actor: str = "system", reason: str | None = None) -> SwapResult:
        """Go back to the previous live version (or any kept `version`) by the same protocol as promote."""
        if version is None:
            current = self.routes.live.version if self.routes.live else None
            version = lifecycle.previous_live_version(current, database_url=self.database_url)
        return await self._make_live(version, action="rollback", actor=actor, reason=reason)

    async def canary(self, version: str, share: float, *, actor: str = "system", reason: str | None = None) -> SwapResult:
        """Route `share` (0..1) of new conversations to `version`; share 0 ends the canary (it becomes a candidate)."""
        if not 0.0 <= share <= 1.0:
            raise InputError(f"canary share {share} is not between 0 and 1; use e.g. --share 0.1")
        async with self._swap_lock:
            previous = self.routes.canary
            if share == 0.0:
                if previous is None or previous.version != version:
                    raise ConflictError(f"{version} is not the canary; nothing to end")
                self.routes.canary, self.routes.canary_share = None, 0.0
                lifecycle.end_canary(version, actor=actor, reason=reason, database_url=self.database_url)
                await self._retire_name(previous)
                return SwapResult(action="canary-end", version=None, previous=version, replicas=self._urls())
            if self.routes.live is not None and self.routes.live.version == version:
                raise ConflictError(f"{version} is already live; a canary must be another version")
            if previous is not None and previous.version == version:
                self.routes.canary_share = share
                lifecycle.mark_canary(version, share, actor=actor, reason=reason, database_url=self.database_url)
                return SwapResult(action="canary", version=version, previous=version, replicas=self._urls())
            loaded = await self._load_everywhere(version, actor=actor)
            self.routes.canary, self.routes.canary_share = loaded, share
            lifecycle.mark_canary(version, share, actor=actor, reason=reason, database_url=self.database_url)
            if previous is not None:
                await self._retire_name(previous)
            return SwapResult(action="canary", version=version, previous=previous.version if previous else None,
                              replicas=self._urls())

    async def _make_live(self, version: str, *, action: str, actor: str, reason: str | None) -> SwapResult:
        started = time.perf_counter()
        async with self._swap_lock:
            previous = self.routes.live
            if previous is not None and previous.version == version:
                raise ConflictError(f"{version} is already live")
            canary = self.routes.canary
            if canary is not None and canary.version == version:
                # the canary is loaded, validated and smoke-tested everywhere already: just flip
                loaded = canary
                self.routes.canary, self.routes.canary_share = None, 0.0
            else:
                loaded = await self._load_everywhere(version, actor=actor)
            self.routes.live = loaded  # the atomic flip: every new request from here on gets the new version
            flipped = time.perf_counter()
            lifecycle.mark_live(version, action=action, actor=actor, reason=reason, database_url=self.database_url)
            if previous is not None:
                await self._retire_name(previous)
            return SwapResult(action=action, version=version, previous=previous.version if previous else None,
                              replicas=self._urls(), flip_ms=(flipped - started) * 1000,
                              total_ms=(time.perf_counter() - started) * 1000)

    async def _load_everywhere(self, version: str, *, actor: str) -> LoadedVersion:
        """Validate, then load under a fresh name + list check + smoke request on each replica; undo all on failure."""
        path = lifecycle.adapter_path(version, database_url=self.database_url)
        try:
            validated = validate_adapter(
                path, served_base_model=await self._served_base(), max_lora_rank=self.settings.max_lora_rank
            )
        except InputError as exc:
            lifecycle.mark_rejected(version, actor=actor, reason=str(exc), database_url=self.database_url)
            raise
        replicas = self.pool.healthy()
        if not replicas:
            self.pool.pick()  # raises NoHealthyReplicaError with the standard message
        loaded = LoadedVersion(version=version, vllm_name=self._new_vllm_name(version), path=validated.path)
        done: list[Replica] = []
        try:
            for replica in replicas:
                done.append(replica)
                await replica.load_adapter(loaded.vllm_name, loaded.path)
        except UpstreamError as exc:
            await asyncio.gather(*(r.unload_adapter(loaded.vllm_name) for r in done), return_exceptions=True)
            raise SwapFailedError(f"loading {version} failed, so it was unloaded again and nothing changed: {exc}") from None
        return loaded

    async def _retire_name(self, loaded: LoadedVersion) -> None:
        """Let requests already on this name finish, then unload it everywhere (its folder stays for rollback)."""
        try:
            await asyncio.wait_for(self.routes.wait_drained(loaded.vllm_name), self.settings.swap_drain_timeout_s)
        except TimeoutError:
            log.warning("requests on %s still running after %.0fs; unloading it anyway (they will fail)",
                        loaded.vllm_name, self.settings.swap_drain_timeout_s)
        results = await asyncio.gather(
            *(replica.unload_adapter(loaded.vllm_name) for replica in self.pool.replicas if replica.healthy),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, Exception):
                log.warning("unloading %s failed (it stays loaded until that replica restarts): %s", loaded.vllm_name, result)

    def _urls(self) -> list[str]:
        return [replica.url for replica in self.pool.healthy()]

    # ---- status -----------------------------------------------------------------------------------------------

    def status(self) -> ServingStatus:
        routes = self.routes
        return ServingStatus(
            ready=self.ready(),
            public_model=routes.public_model,
            base_model=self.base_model,
            live=routes.live.version if routes.live else None,
            canary=routes.canary.version if routes.canary else None,
            canary_share=routes.canary_share if routes.canary else 0.0,
            vllm_names={loaded.version: loaded.vllm_name for loaded in routes.names_in_use()},
            in_flight=dict(routes.in_flight),
            replicas=[replica.status() for replica in self.pool.replicas],
        )


__all__ = ["ChatStream", "NoHealthyReplicaError", "Route", "ServingGateway", "ServingStatus", "SwapResult",
           "UpstreamError"]
