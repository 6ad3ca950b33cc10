"""Shared replicas (HOUSESTYLE_SHARED_REPLICAS): one vLLM name per served version for every service on the store.

A swap made by one service loads the version once, under a fresh name it records in the registry with the change;
every other service, following the registry (`serving.follow`), finds that name already loaded and serves it. Only
a name the registry records is ever loaded by a service that did not make it up: one the registry no longer names
was unloaded or is about to be (vLLM must never see a name again, vllm#42125). A name a service lets go of is
unloaded by the last living service to let go of it (`core.served_names`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from core import registry, served_names
from core.errors import InputError
from core.locks import new_holder_id
from serving.replicas import Replica

log = logging.getLogger("housestyle.serving")

MIN_TTL_S = 10.0  # a published row outlives a few missed re-reads


def check_shared_settings(shared: bool, follow_seconds: float) -> None:
    """Shared replicas need every service to follow the registry (else none would serve another's swap)."""
    if shared and follow_seconds <= 0:
        raise InputError("HOUSESTYLE_SHARED_REPLICAS needs HOUSESTYLE_REGISTRY_FOLLOW_SECONDS above 0 (e.g. 2): "
                         "each service serves the names another service's swap recorded by re-reading the registry")


class SharedNames:
    """This service's side of the shared names: publishing the names it uses, and claiming the registry's."""

    def __init__(self, database_url: str, *, follow_seconds: float, names_used: Callable[[], set[str]]) -> None:
        self.database_url, self.names_used = database_url, names_used
        self.holder = new_holder_id()
        self.renew_s = follow_seconds
        self.ttl = timedelta(seconds=max(3 * follow_seconds, MIN_TTL_S))
        self.about_to_use: set[str] = set()  # names being loaded or adopted, not yet in a routing table
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Publish now, then renew every re-read interval on a task of its own (a swap draining for minutes must
        not let this service's row run out)."""
        await self.publish()
        self._task = asyncio.create_task(self._renew(), name="housestyle-shared-names")

    async def stop(self) -> None:
        """Stop renewing and withdraw the row (best effort: it runs out on its own)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.withdraw()
        except Exception as exc:  # noqa: BLE001 - the store may be gone; the row runs out by itself
            log.warning("could not withdraw this service's vLLM names (its row runs out on its own): %s", exc)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                await self.publish()
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("publishing this service's vLLM names failed (%s); trying again", exc)

    async def publish(self) -> None:
        """Record the names this service routes to, streams on or is about to serve (renews its row)."""
        names = self.names_used() | self.about_to_use
        await asyncio.to_thread(served_names.publish, self.holder, names, ttl=self.ttl, url=self.database_url)

    async def withdraw(self) -> None:
        await asyncio.to_thread(served_names.withdraw, self.holder, url=self.database_url)

    async def last_to_let_go(self, name: str) -> bool:
        """Whether this service, which no longer uses `name`, should unload it: no other living service uses it.
        Publishes first, so of two services letting go at once at least one sees the other without it."""
        await self.publish()
        others = await asyncio.to_thread(served_names.used_by_others, self.holder, url=self.database_url)
        return name not in others

    async def name_for(self, version: str, recorded: str | None, new_name: Callable[[str], str]) -> str | None:
        """The name to serve `version` under: the one the registry recorded, else one claimed now (None: the
        version is no longer served, the registry read was stale)."""
        if recorded is not None:
            return recorded
        return await asyncio.to_thread(registry.claim_vllm_name, version, new_name(version),
                                       database_url=self.database_url)

    async def still_named(self, version: str, name: str) -> bool:
        """Whether the registry still serves `version` under `name` (else it may be unloaded already)."""
        return await asyncio.to_thread(registry.shared_vllm_name, version, database_url=self.database_url) == name


async def holds(replica: Replica, name: str) -> bool:
    """Whether the replica lists `name` among its loaded adapters."""
    return name in {model.id for model in await replica.list_models() if model.parent is not None}
