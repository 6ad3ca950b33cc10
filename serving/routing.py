"""The in-process routing table: which vLLM adapter name serves the public model, the canary share, in-flight counts."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter

from pydantic import BaseModel


class Route(BaseModel):
    """Where one request goes: the adapter version (None = base model) and the name vLLM knows it by."""

    version: str | None
    vllm_model: str
    public_model: str
    canary: bool = False


class LoadedVersion(BaseModel):
    """An adapter version loaded on the replicas under a unique, never-reused vLLM name."""

    version: str
    vllm_name: str
    path: str


def canary_bucket(conversation_key: str) -> float:
    """A stable number in [0, 1) per conversation, so a conversation stays on one side of a canary split."""
    digest = hashlib.sha256(conversation_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class RoutingTable:
    """Live and canary versions plus per-name in-flight counts.

    Resolving and acquiring happen in one synchronous step (no await), so a swap can never unload a name between a
    request choosing it and the request being counted.
    """

    def __init__(self, public_model: str, base_vllm_name: str) -> None:
        self.public_model = public_model
        self.base_vllm_name = base_vllm_name
        self.live: LoadedVersion | None = None
        self.canary: LoadedVersion | None = None
        self.canary_share = 0.0
        self.in_flight: Counter[str] = Counter()
        self._drained = asyncio.Condition()

    def resolve(self, conversation_key: str | None = None) -> Route:
        """The route a new request with this conversation key would take now."""
        if self.canary is not None and self.canary_share > 0:
            bucket = canary_bucket(conversation_key) if conversation_key else random.random()
            if bucket < self.canary_share:
                return Route(version=self.canary.version, vllm_model=self.canary.vllm_name,
                             public_model=self.public_model, canary=True)
        if self.live is not None:
            return Route(version=self.live.version, vllm_model=self.live.vllm_name, public_model=self.public_model)
        return Route(version=None, vllm_model=self.base_vllm_name, public_model=self.public_model)

    def acquire(self, conversation_key: str | None = None) -> Route:
        """Resolve a route and count the request against its vLLM name until `release`."""
        route = self.resolve(conversation_key)
        self.in_flight[route.vllm_model] += 1
        return route

    async def release(self, route: Route) -> None:
        self.in_flight[route.vllm_model] -= 1
        if self.in_flight[route.vllm_model] <= 0:
            del self.in_flight[route.vllm_model]
            async with self._drained:
                self._drained.notify_all()

    async def wait_drained(self, vllm_name: str) -> None:
        """Return once no request is in flight on this name (new requests can no longer pick it)."""
        async with self._drained:
            await self._drained.wait_for(lambda: self.in_flight[vllm_name] <= 0)

    def names_in_use(self) -> list[LoadedVersion]:
        return [loaded for loaded in (self.live, self.canary) if loaded is not None]
