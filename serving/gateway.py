"""THE interface the plugin uses: route OpenAI chat requests to vLLM replicas and swap adapter versions safely.

    gateway = ServingGateway(settings)
    await gateway.start()                       # starts managed vLLM or attaches to HOUSESTYLE_VLLM_URLS
    route, body = await gateway.chat(request, conversation_key="conv-42", brand_id=2)   # brand: default 1
    route, chunks = await gateway.stream_chat(request, conversation_key="conv-42")
    async for chunk in chunks: ...              # OpenAI chat.completion.chunk dicts; always iterate or aclose()
    await gateway.promote("v0003-1a2b3c4d", actor="ana", reason="eval passed")
    await gateway.stop()

Every response names the adapter version that produced it: `route.version` (None = base model), also written into
the body's `system_fingerprint` as `housestyle:<version|base>`. The gateway composes: the replica pool
(`serving.replicas`), the routing table (`serving.routing`), the relay (`serving.relay`) and the swap protocol
(`serving.swaps`); here live only start/stop, restoring what the registry says serves, replicas rejoining, and
the periodic fingerprint check (`serving.fingerprint`): every replica still serves each version's own weights.

Brands (`collector.brands`) share the base and the replicas; each has its own routing table, so its live and canary
adapters are loaded under names of their own and its swaps never touch another brand's requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
from typing import Any

from pydantic import BaseModel

from collector.brands import list_brands, settings_for
from core.db import open_store, session_scope
from core.errors import InputError
from core.models import DEFAULT_BRAND_ID, AdapterStatus, AdapterVersion
from core.registry import adapters_with_status
from core.settings import Settings
from serving.errors import FingerprintMismatchError, NoHealthyReplicaError, UpstreamError
from serving.fingerprint import FingerprintChecks
from serving.follow import RegistryFollower, Wanted
from serving.relay import ChatStream, Relay
from serving.replicas import Replica, ReplicaPool, ReplicaStatus
from serving.routing import BrandRoutes, LoadedVersion, Route
from serving.shared_names import SharedNames, check_shared_settings
from serving.swaps import AdapterSwaps, SwapResult
from serving.validation import validate_adapter
from serving.vllm_server import BASE_SERVED_NAME, VllmServer, lora_slots, replica_cpu_lists

log = logging.getLogger("housestyle.serving")

VLLM_NAME_PREFIX = "hs-"  # + a tag of the store: services on different stores can share one vLLM


class ServingStatus(BaseModel):
    """What `GET /admin/adapters` and `housestyle adapters list` show about serving right now."""

    ready: bool
    brand: int = DEFAULT_BRAND_ID
    public_model: str
    base_model: str
    live: str | None
    canary: str | None
    canary_share: float
    vllm_names: dict[str, str]  # version -> the vLLM name it is loaded under
    in_flight: dict[str, int]  # vLLM name -> requests in flight
    replicas: list[ReplicaStatus]


class ServingGateway:
    """Routes chat requests to the least busy healthy vLLM replica and hot-swaps adapters with no failed request."""

    def __init__(self, settings: Settings, *, urls: list[str] | None = None, database_url: str | None = None) -> None:
        self.settings = settings
        self.database_url = database_url or settings.resolved_database_url
        self.managed = not (urls or settings.vllm_urls)
        self.api_key = settings.vllm_api_key or (secrets.token_hex(24) if self.managed else None)
        open_store(self.database_url)  # the brands are read from it (and every later step reads the registry)
        with session_scope(self.database_url) as session:
            public_names = {int(b.id): settings_for(settings, b).public_model_name for b in list_brands(session)}
        self.max_loras = lora_slots(settings.max_loras, len(public_names))
        self.servers: list[VllmServer] = []
        if self.managed:
            cpu_lists = replica_cpu_lists(sorted(os.sched_getaffinity(0)), settings.vllm_replicas)
            for index in range(settings.vllm_replicas):
                port = settings.vllm_port + index if settings.vllm_port else None
                self.servers.append(VllmServer(settings, port=port, api_key=self.api_key,
                                               cpu_bind=cpu_lists[index] if cpu_lists else None,
                                               max_loras=self.max_loras))
            urls = [server.url for server in self.servers]
        else:
            urls = urls or [url.strip() for url in settings.vllm_urls.split(",") if url.strip()]
        self.pool = ReplicaPool(
            [Replica.configured(url, self.api_key, settings) for url in urls],
            health_interval_s=settings.health_interval_s,
            on_recovered=self._reload_replica,
        )
        self.routes = BrandRoutes(BASE_SERVED_NAME, public_names)
        self.base_model = settings.resolved_base_model if (self.managed or settings.base_model) else ""
        # vLLM names this service owns: only these are ever unloaded as leftovers when a replica rejoins
        self.name_prefix = f"{VLLM_NAME_PREFIX}{hashlib.sha256(self.database_url.encode()).hexdigest()[:6]}-"
        self.relay = Relay(self.pool, self.routes, self._repair)
        self.fingerprints = FingerprintChecks(self.database_url)
        check_shared_settings(settings.shared_replicas, settings.registry_follow_seconds)
        self.shared = SharedNames(self.database_url, follow_seconds=settings.registry_follow_seconds,
                                  names_used=self._names_used) if settings.shared_replicas else None
        self.swaps = AdapterSwaps(settings, self.pool, self.routes, database_url=self.database_url,
                                  new_name=self._new_vllm_name, served_base=self._served_base,
                                  max_loras=self.max_loras, fingerprints=self.fingerprints, shared=self.shared)
        self._fingerprint_task: asyncio.Task | None = None
        self._repair_lock = asyncio.Lock()
        self._started = False
        # every instance on the store serves what the registry says: re-read it periodically (and on NOTIFY)
        self.follower = RegistryFollower(
            interval_s=settings.registry_follow_seconds, database_url=self.database_url,
            brand_ids=lambda: list(self.routes.public_names), generation=lambda: self.swaps.generation,
            apply=self._follow,
        )
        self.max_model_len: int | None = None  # tokens of prompt + reply the served base takes (from /v1/models)

    # ---- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start (managed) or attach to the replicas, load the registry's live and canary versions, begin health checks.

        Raises VllmStartError (managed server died/timed out, naming its log) or NoHealthyReplicaError (attach mode,
        nothing answers).
        """
        if self._started:
            return
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
        if self.shared is not None:
            await self.shared.start()  # published before the names are loaded on the replicas
        await self.pool.check_once()
        if not self.pool.healthy():
            await self.stop()
            raise NoHealthyReplicaError(
                f"none of the vLLM replicas {', '.join(r.url for r in self.pool.replicas)} is healthy; "
                "check HOUSESTYLE_VLLM_URLS and that the servers are running"
            )
        self.pool.start()
        self.follower.start()
        if self.settings.fingerprint_interval_s > 0:
            self._fingerprint_task = asyncio.create_task(self._check_fingerprints_periodically(),
                                                         name="housestyle-fingerprints")
        self._started = True

    async def stop(self) -> None:
        """Stop health checks, close the upstream clients and stop managed vLLM servers (no orphans)."""
        self._started = False
        task, self._fingerprint_task = self._fingerprint_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.follower.stop()
        if self.shared is not None:
            await self.shared.stop()
        await self.pool.close()
        await asyncio.gather(*(server.stop() for server in self.servers))

    def eval_target(self) -> tuple[str, str | None] | None:
        """(url, api key) of a healthy replica, for batch work on the same base (a refresh's evaluation)."""
        replicas = self.pool.healthy()
        return (replicas[0].url, self.api_key) if replicas else None

    @property
    def started(self) -> bool:
        return self._started

    def ready(self) -> bool:
        """True when at least one replica is healthy with the live (and canary) versions loaded."""
        return self._started and bool(self.pool.healthy())

    def _registry_versions(self) -> list[tuple[AdapterVersion, str]]:
        """Each brand's live and canary version in the registry, with its role (blocking: run it in a thread)."""
        wanted = []
        with session_scope(self.database_url) as session:
            for brand in self.routes.public_names:
                for role, status in (("live", AdapterStatus.LIVE), ("canary", AdapterStatus.CANARY)):
                    wanted += [(adapter, role) for adapter in adapters_with_status(session, status, brand)[:1]]
        return wanted

    async def _restore_from_registry(self) -> None:
        """Fill each brand's routing table from the registry (live + canary); a version that fails validation is
        skipped."""
        for brand in self.routes.public_names:
            self.routes.table(brand)
        for adapter, role in await asyncio.to_thread(self._registry_versions):
            served_base = await self._served_base()
            try:
                validated = await asyncio.to_thread(validate_adapter, adapter.path, served_base_model=served_base,
                                                    max_lora_rank=self.settings.max_lora_rank)
            except InputError as exc:
                log.error("not serving %s version %s: %s", role, adapter.version, exc)
                continue
            if self.shared is None:
                name = self._new_vllm_name(adapter.version)
            else:
                name = await self.shared.name_for(adapter.version, adapter.vllm_name, self._new_vllm_name)
                if name is None:
                    continue  # taken off since the read: the follower serves what replaced it
            loaded = LoadedVersion(version=adapter.version, vllm_name=name, path=validated.path)
            table = self.routes.table(adapter.brand_id)
            if role == "live":
                table.live = loaded
            else:
                table.canary, table.canary_share = loaded, adapter.canary_share

    async def _follow(self, wanted: dict[int, Wanted], generation: int) -> None:
        """Apply one registry read to every brand's table (`serving.follow`); a brand already in step costs nothing."""
        for brand, brand_wanted in wanted.items():
            await self.swaps.follow(brand, brand_wanted, generation=generation)

    def _names_used(self) -> set[str]:
        """The adapter names this service routes to or still has requests on."""
        return {loaded.vllm_name for loaded in self.routes.names_in_use()} | set(self.routes.in_flight())

    async def _reload_replica(self, replica: Replica) -> None:
        """A replica (re)joins: make it serve exactly the routing table's names (a restarted vLLM has none loaded),
        each answering with its version's fingerprint (else it stays out): a name it still holds is kept when it
        does, and loaded again from its folder when it does not."""
        async with self.swaps.lock:
            listed = {model.id for model in await replica.list_models() if model.parent is not None}
            wanted = {loaded.vllm_name: loaded for loaded in self.routes.names_in_use()}
            for name in listed - wanted.keys():
                if name.startswith(self.name_prefix):  # ours, left from a swap while this replica was out: free it
                    if self.shared is None or await self.shared.last_to_let_go(name):  # unless another uses it
                        await replica.unload_adapter(name)
            for name, loaded in wanted.items():
                if name in listed:  # still loaded (the replica was slow, not restarted): keep it if its weights are
                    try:            # the version's; reloading a name costs a slot on vLLM (vllm#54839) and is reuse
                        await self.fingerprints.check([replica], loaded, consequence="it is loaded again")
                        continue
                    except FingerprintMismatchError:  # other weights under our name: load the folder again
                        await replica.unload_adapter(name)
                await self.swaps.place(replica, loaded, recorded=True)
                await self.fingerprints.check([replica], loaded, consequence="it stays out of the pool")
            replica.loaded_adapters = set(wanted)

    async def check_fingerprints(self) -> None:
        """One round of the periodic check: each healthy replica answers the probe set with each served version's
        fingerprint; one that does not is taken out of the pool (it rejoins once its names, loaded again from the
        folders, do). A replica that fails to answer is left to the health checks."""
        async with self.swaps.lock:  # the names in use stay loaded while they are probed
            for replica in self.pool.healthy():
                for loaded in self.routes.names_in_use():
                    try:
                        await self.fingerprints.check([replica], loaded, consequence="it is taken out of the pool")
                    except FingerprintMismatchError as exc:
                        self.pool.mark_unhealthy(replica, str(exc))
                        break
                    except UpstreamError as exc:
                        log.warning("fingerprint check of %s on %s skipped: %s", loaded.version, replica.url, exc)

    async def _check_fingerprints_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.fingerprint_interval_s)
            try:
                await self.check_fingerprints()
            except Exception:  # the check must never die; the next round tries again
                log.exception("fingerprint round failed")

    async def _discover_base(self) -> None:
        """Learn the base model's context window and, in attach mode, its served name (and path, unless configured)
        from `/v1/models`."""
        for replica in self.pool.replicas:
            try:
                base = await replica.base_model()
            except UpstreamError:
                continue
            self.max_model_len = base.max_model_len
            if not self.managed:
                self.routes.base_vllm_name = base.id
                self.base_model = self.base_model or base.root or base.id
            return
        if self.managed:
            return  # the health check will say what is wrong
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
                    await self.swaps.place(replica, loaded, recorded=True)
                    await self.fingerprints.check([replica], loaded, consequence="it is taken out of the pool")
            except UpstreamError as exc:  # a fingerprint mismatch too: the relay takes the replica out
                log.warning("replica %s could not load %s again: %s", replica.url, vllm_name, exc)
                return False
        return True

    # ---- requests and swaps: the relay and the swap protocol do the work ----------------------------------------

    def resolve(self, conversation_key: str | None = None, *, brand_id: int = DEFAULT_BRAND_ID) -> Route:
        """The route a new request for this conversation would take now (canary split is sticky per key)."""
        return self.routes.table(brand_id).resolve(conversation_key)

    async def chat(self, request: dict[str, Any], *, conversation_key: str | None = None,
                   brand_id: int = DEFAULT_BRAND_ID) -> tuple[Route, dict]:
        """See `serving.relay.Relay.chat`."""
        return await self.relay.chat(request, conversation_key=conversation_key, brand_id=brand_id)

    async def stream_chat(self, request: dict[str, Any], *, conversation_key: str | None = None,
                          brand_id: int = DEFAULT_BRAND_ID) -> tuple[Route, ChatStream]:
        """See `serving.relay.Relay.stream_chat`."""
        return await self.relay.stream_chat(request, conversation_key=conversation_key, brand_id=brand_id)

    async def promote(self, version: str, *, actor: str = "system", reason: str | None = None) -> SwapResult:
        """See `serving.swaps.AdapterSwaps.promote`."""
        return await self.swaps.promote(version, actor=actor, reason=reason)

    async def rollback(self, version: str | None = None, *, actor: str = "system", reason: str | None = None,
                       brand_id: int = DEFAULT_BRAND_ID) -> SwapResult:
        """See `serving.swaps.AdapterSwaps.rollback`."""
        return await self.swaps.rollback(version, actor=actor, reason=reason, brand_id=brand_id)

    async def canary(self, version: str, share: float, *, actor: str = "system", reason: str | None = None) -> SwapResult:
        """See `serving.swaps.AdapterSwaps.canary`."""
        return await self.swaps.canary(version, share, actor=actor, reason=reason)

    # ---- status -----------------------------------------------------------------------------------------------

    def status(self, brand_id: int = DEFAULT_BRAND_ID) -> ServingStatus:
        """What serves the brand now (vllm_names and in_flight: that brand's)."""
        routes = self.routes.table(brand_id)
        return ServingStatus(
            ready=self.ready(),
            brand=brand_id,
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
