"""The swap protocol: promote, roll back and canary adapter versions on every replica with no failed request.

A new version is validated, then loaded under a fresh, never-reused vLLM name on each healthy replica (load, list
check), and every replica must answer the probe set with the version's fingerprint
(`serving.fingerprint`); if any replica fails, it is unloaded everywhere and nothing changed. Then the routing table
flips atomically, the registry records who did what, and the old name is drained (requests already on it finish)
before it is unloaded.

Each brand has its own table (`serving.routing.BrandRoutes`): a version changes only its own brand's table, so
another brand's requests never wait for, or see, the swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pydantic import BaseModel

from core import registry
from core.db import session_scope
from core.errors import ConflictError, InputError
from core.models import DEFAULT_BRAND_ID
from core.settings import Settings
from serving.errors import NoHealthyReplicaError, SwapFailedError, UpstreamError
from serving.fingerprint import FingerprintChecks
from serving.follow import Serving, Step, Wanted, decide
from serving.replicas import Replica, ReplicaPool
from serving.routing import BrandRoutes, LoadedVersion, RoutingTable
from serving.shared_names import SharedNames, holds
from serving.validation import validate_adapter

log = logging.getLogger("housestyle.serving")


class SwapResult(BaseModel):
    """The outcome of promote / rollback / canary, returned once the change is complete on every healthy replica."""

    action: str
    version: str | None
    previous: str | None
    replicas: list[str]
    flip_ms: float = 0.0  # from the call to the moment new requests got the new version
    total_ms: float = 0.0  # including draining the old version's requests and unloading it


class AdapterSwaps:
    """Changes which adapter versions the routing table serves, one change at a time (`lock`)."""

    def __init__(
        self,
        settings: Settings,
        pool: ReplicaPool,
        routes: BrandRoutes,
        *,
        database_url: str,
        new_name: Callable[[str], str],
        served_base: Callable[[], Awaitable[str | None]],
        max_loras: int,
        fingerprints: FingerprintChecks,
        shared: SharedNames | None = None,
    ) -> None:
        self.settings, self.pool, self.routes = settings, pool, routes
        self.fingerprints = fingerprints
        self.shared = shared  # shared replicas: names from the registry, unloaded by the last service using them
        self.max_loras = max_loras  # adapters each vLLM holds at once (--max-loras)
        self.database_url = database_url
        self.new_name, self.served_base = new_name, served_base
        self.lock = asyncio.Lock()  # swaps, and replicas rejoining, never interleave
        # +1 each time a swap made here takes the lock: a registry read begun before it may predate the swap's
        # registry write, so following skips a round whose read saw another generation (`follow`)
        self.generation = 0
        self.unservable: set[str] = set()  # versions this instance failed to validate while following (logged once)

    async def promote(self, version: str, *, actor: str = "system", reason: str | None = None) -> SwapResult:
        """Make `version` live on every replica with no failed request; the old version is retired (kept for rollback).

        Raises AdapterRejectedError (validation; recorded as rejected), SwapFailedError (a replica failed; the new
        version is unloaded everywhere), NoHealthyReplicaError. The live version keeps serving on any failure.
        """
        return await self._make_live(version, action="promote", actor=actor, reason=reason)

    async def rollback(self, version: str | None = None, *, actor: str = "system", reason: str | None = None,
                       brand_id: int = DEFAULT_BRAND_ID) -> SwapResult:
        """Go back to the brand's previous live version (or any kept `version`) by the same protocol as promote."""
        if version is None:
            table = self.routes.table(brand_id)
            current = table.live.version if table.live else None
            version = await asyncio.to_thread(registry.previous_live_version, current,
                                              database_url=self.database_url, brand_id=brand_id)
        return await self._make_live(version, action="rollback", actor=actor, reason=reason)

    def _registered(self, version: str) -> tuple[int, str]:
        """(brand, adapter folder) of a registered version; NotFoundError for an unknown one. Blocking: run it in a
        thread, before taking the lock (a registered version's brand and folder never change)."""
        with session_scope(self.database_url) as session:
            adapter = registry.get_adapter(session, version)
            return adapter.brand_id, adapter.path

    async def _record(self, change: Callable[..., object], *args: object, **kwargs: object) -> None:
        """A registry write, in a thread so the event loop keeps serving; awaited under the lock, so the registry
        records the swaps in the order they happened."""
        await asyncio.to_thread(change, *args, database_url=self.database_url, **kwargs)

    async def canary(self, version: str, share: float, *, actor: str = "system", reason: str | None = None) -> SwapResult:
        """Route `share` (0..1) of new conversations to `version`; share 0 ends the canary (it becomes a candidate)."""
        if not 0.0 <= share <= 1.0:
            raise InputError(f"canary share {share} is not between 0 and 1; use e.g. --share 0.1")
        brand, path = await asyncio.to_thread(self._registered, version)
        table = self.routes.table(brand)
        async with self._local_swap():
            previous = table.canary
            if share == 0.0:
                if previous is None or previous.version != version:
                    raise ConflictError(f"{version} is not the canary; nothing to end")
                table.canary, table.canary_share = None, 0.0
                await self._record(registry.end_canary, version, actor=actor, reason=reason)
                await self._retire_name(table, previous)
                return SwapResult(action="canary-end", version=None, previous=version, replicas=self._urls())
            if table.live is not None and table.live.version == version:
                raise ConflictError(f"{version} is already live; a canary must be another version")
            if previous is not None and previous.version == version:
                table.canary_share = share
                await self._record(registry.mark_canary, version, share, actor=actor, reason=reason,
                                   vllm_name=self._recorded_name(previous))
                return SwapResult(action="canary", version=version, previous=version, replicas=self._urls())
            loaded = await self._load_everywhere(version, path, actor=actor)
            table.canary, table.canary_share = loaded, share
            await self._record(registry.mark_canary, version, share, actor=actor, reason=reason,
                               vllm_name=self._recorded_name(loaded))
            if previous is not None:
                await self._retire_name(table, previous)
            return SwapResult(action="canary", version=version, previous=previous.version if previous else None,
                              replicas=self._urls())

    async def _make_live(self, version: str, *, action: str, actor: str, reason: str | None) -> SwapResult:
        started = time.perf_counter()
        brand, path = await asyncio.to_thread(self._registered, version)
        table = self.routes.table(brand)
        async with self._local_swap():
            previous = table.live
            if previous is not None and previous.version == version:
                raise ConflictError(f"{version} is already live")
            canary = table.canary
            if canary is not None and canary.version == version:
                # the canary is loaded, validated and fingerprinted everywhere already: just flip
                loaded = canary
                table.canary, table.canary_share = None, 0.0
            else:
                loaded = await self._load_everywhere(version, path, actor=actor)
            table.live = loaded  # the atomic flip: every new request of this brand from here on gets the new version
            flipped = time.perf_counter()
            await self._record(registry.mark_live, version, action=action, actor=actor, reason=reason,
                               vllm_name=self._recorded_name(loaded))
            if previous is not None:
                await self._retire_name(table, previous)
            return SwapResult(action=action, version=version, previous=previous.version if previous else None,
                              replicas=self._urls(), flip_ms=(flipped - started) * 1000,
                              total_ms=(time.perf_counter() - started) * 1000)

    def _recorded_name(self, loaded: LoadedVersion) -> str | None:
        """The name the registry records with a change: on shared replicas the one every service serves."""
        return loaded.vllm_name if self.shared is not None else None

    async def _load_everywhere(self, version: str, path: str, *, actor: str, record: bool = True,
                               name: str | None = None) -> LoadedVersion:
        """Validate the adapter in `path`, then load it under a fresh name (or `name`, the one the registry records
        on shared replicas) + list check on each replica, and check each answers with the version's fingerprint;
        undo all on failure. `record`: a version failing validation is recorded as rejected (not when following:
        another instance served it, the fault may be this host's copy)."""
        served_base = await self.served_base()
        try:  # validation reads the adapter's files: off the event loop too
            validated = await asyncio.to_thread(validate_adapter, path, served_base_model=served_base,
                                                max_lora_rank=self.settings.max_lora_rank)
        except InputError as exc:
            if record:
                await self._record(registry.mark_rejected, version, actor=actor, reason=str(exc))
            raise
        replicas = self.pool.healthy()
        if not replicas:
            self.pool.pick()  # raises NoHealthyReplicaError with the standard message
        if len(self.routes.names_in_use()) + 1 > self.max_loras:
            raise SwapFailedError(
                f"vLLM holds {self.max_loras} adapters at once (--max-loras) and {len(self.routes.names_in_use())} "
                f"are in use by the brands' live and canary versions, so {version} cannot be loaded; restart "
                "`housestyle serve` (it sizes --max-loras from the number of brands) or raise HOUSESTYLE_MAX_LORAS"
            )
        loaded = LoadedVersion(version=version, vllm_name=name or self.new_name(version), path=validated.path)
        done: list[Replica] = []  # the replicas this service loaded it on (not those it found it on)
        if self.shared is not None:
            self.shared.about_to_use.add(loaded.vllm_name)
            await self.shared.publish()  # before loading or adopting: no other service unloads it meanwhile
        try:
            for replica in replicas:
                if await self.place(replica, loaded, recorded=name is not None):
                    done.append(replica)
            await self.fingerprints.check(replicas, loaded, consequence="the swap is refused, nothing changed")
        except UpstreamError as exc:
            await asyncio.gather(*(r.unload_adapter(loaded.vllm_name) for r in done), return_exceptions=True)
            raise SwapFailedError(f"loading {version} failed, so it was unloaded again and nothing changed: {exc}") from None
        finally:
            if self.shared is not None:
                self.shared.about_to_use.discard(loaded.vllm_name)
        return loaded

    async def place(self, replica: Replica, loaded: LoadedVersion, *, recorded: bool) -> bool:
        """Load `loaded` on the replica (True); on shared replicas, serve it where another service loaded it already
        (False). A name the registry recorded is loaded only while the registry still names it: one it has moved
        on from may have been unloaded, and vLLM must never see a name again."""
        if self.shared is None:
            await replica.load_adapter(loaded.vllm_name, loaded.path, smoke=False)  # the probe generates
            return True
        if await holds(replica, loaded.vllm_name):
            log.info("replica %s already holds %s (loaded by another service on this store): serving it",
                     replica.url, loaded.vllm_name)
            return False
        if recorded and not await self.shared.still_named(loaded.version, loaded.vllm_name):
            raise UpstreamError(f"the registry no longer serves {loaded.version} under {loaded.vllm_name}; the next "
                                "re-read follows what it serves now")
        try:
            await replica.load_adapter(loaded.vllm_name, loaded.path, smoke=False)
        except UpstreamError as exc:  # another service loaded it a moment before us: vLLM refuses the second
            if exc.status_code == 400 and await holds(replica, loaded.vllm_name):
                return False
            raise
        return True

    async def _retire_name(self, table: RoutingTable, loaded: LoadedVersion) -> None:
        """Let requests already on this name finish, then unload it everywhere (its folder stays for rollback)."""
        try:
            await asyncio.wait_for(table.wait_drained(loaded.vllm_name), self.settings.swap_drain_timeout_s)
        except TimeoutError:
            log.warning("requests on %s still running after %.0fs; unloading it anyway (they will fail)",
                        loaded.vllm_name, self.settings.swap_drain_timeout_s)
        if self.shared is not None and not await self.shared.last_to_let_go(loaded.vllm_name):
            log.info("%s stays loaded: another service on this store still uses it, and the last to let go unloads it",
                     loaded.vllm_name)
            return
        results = await asyncio.gather(
            *(replica.unload_adapter(loaded.vllm_name) for replica in self.pool.replicas if replica.healthy),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, Exception):
                log.warning("unloading %s failed (it stays loaded until that replica restarts): %s", loaded.vllm_name, result)

    @contextlib.asynccontextmanager
    async def _local_swap(self) -> AsyncIterator[None]:
        """The lock, for a swap made here: `generation` moves on as it starts and as it ends, so a registry read
        made before or during it (when its registry write may not be in) is never applied."""
        async with self.lock:
            self.generation += 1
            try:
                yield
            finally:
                self.generation += 1

    async def follow(self, brand_id: int, wanted: Wanted, *, generation: int) -> list[Step]:
        """Make the brand's table serve what the registry says (`wanted`, read while `self.generation` was
        `generation`): the steps of `serving.follow.decide`, each by this protocol, nothing written to the registry.
        Returns the steps taken; none when a swap made here since the read may not be in it (the next round
        reads again). A step that fails (validation, a replica) is logged and the table keeps what it had."""
        table = self.routes.table(brand_id)
        async with self.lock:
            if self.generation != generation:
                return []
            steps = decide(wanted, Serving(live=table.live.version if table.live else None,
                                           canary=table.canary.version if table.canary else None,
                                           canary_share=table.canary_share if table.canary else 0.0))
            done: list[Step] = []
            for step in steps:
                if step.version is not None and step.version in self.unservable:
                    continue
                try:
                    await self._follow_step(table, step)
                except (InputError, SwapFailedError, UpstreamError, NoHealthyReplicaError) as exc:
                    if isinstance(exc, InputError):
                        self.unservable.add(step.version or "")
                    log.error("brand %s: could not follow the registry's %s of %s (this instance keeps serving "
                              "what it served): %s", brand_id, step.action, step.version, exc)
                    break
                log.info("brand %s: followed the registry's %s of %s", brand_id, step.action, step.version)
                done.append(step)
            return done

    async def _follow_step(self, table: RoutingTable, step: Step) -> None:
        if step.action == "end-canary":
            previous, table.canary, table.canary_share = table.canary, None, 0.0
            if previous is not None:
                await self._retire_name(table, previous)
            return
        if step.action == "canary":
            previous = table.canary
            if previous is not None and previous.version == step.version:
                table.canary_share = step.share
                return
            assert step.version is not None and step.path is not None
            table.canary = await self._load_everywhere(step.version, step.path, actor="follow", record=False,
                                                       name=await self._shared_name(step))
            table.canary_share = step.share
            if previous is not None:
                await self._retire_name(table, previous)
            return
        previous = table.live  # promote / rollback
        if step.version is None:
            table.live = None
        elif table.canary is not None and table.canary.version == step.version:
            table.live, table.canary, table.canary_share = table.canary, None, 0.0
        else:
            assert step.path is not None
            table.live = await self._load_everywhere(step.version, step.path, actor="follow", record=False,
                                                     name=await self._shared_name(step))
        if previous is not None:
            await self._retire_name(table, previous)

    async def _shared_name(self, step: Step) -> str | None:
        """Shared replicas: the name the registry serves the step's version under (claimed when it records none)."""
        if self.shared is None or step.version is None:
            return None
        name = await self.shared.name_for(step.version, step.name, self.new_name)
        if name is None:
            raise SwapFailedError(f"{step.version} is no longer served by the registry; the next re-read follows it")
        return name

    def _urls(self) -> list[str]:
        return [replica.url for replica in self.pool.healthy()]
