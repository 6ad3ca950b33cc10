"""Applying a gate's verdict: promote the winning candidate, or start it as a canary when a canary share is set.

The scheduler inside `housestyle serve`, `housestyle refresh` and `POST /admin/refresh` all apply a verdict through
`apply_decision`, each with its own `Swapper`: the service's gateway, or the running service / registry
(`serving.remote`) from the command line.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from core.settings import Settings
from serving.remote import canary_version, promote_version


class Swapper(Protocol):
    """Changes what serves: blocking calls that return once the change is complete (or refused)."""

    def promote(self, version: str, *, actor: str, reason: str) -> None: ...

    def canary(self, version: str, share: float, *, actor: str, reason: str) -> None: ...


class Applied(BaseModel):
    """What a winning candidate became."""

    action: Literal["promote", "canary"]
    share: float  # 1.0 for a promotion

    def describe(self, version: str, public_model: str) -> str:
        if self.action == "canary":
            return f"{version} is a canary for {self.share:.0%} of new conversations behind {public_model}"
        return f"{version} is live behind {public_model}"


def apply_decision(swapper: Swapper, version: str, *, canary_share: float, actor: str, reason: str) -> Applied:
    """Promote `version`, or start it as a canary at `canary_share` (HOUSESTYLE_REFRESH_CANARY_SHARE) when above 0."""
    if canary_share > 0:
        swapper.canary(version, canary_share, actor=actor, reason=reason)
        return Applied(action="canary", share=canary_share)
    swapper.promote(version, actor=actor, reason=reason)
    return Applied(action="promote", share=1.0)


class GatewaySwapper:
    """Swaps through the service's own gateway, from the refresh's worker thread onto the service's event loop."""

    def __init__(self, gateway: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.gateway, self.loop = gateway, loop

    def _run(self, change: Any) -> None:
        asyncio.run_coroutine_threadsafe(change, self.loop).result()

    def promote(self, version: str, *, actor: str, reason: str) -> None:
        self._run(self.gateway.promote(version, actor=actor, reason=reason))

    def canary(self, version: str, share: float, *, actor: str, reason: str) -> None:
        self._run(self.gateway.canary(version, share, actor=actor, reason=reason))


class RemoteSwapper:
    """Swaps through the `housestyle serve` running on this HOME, else in the registry for its next start."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def promote(self, version: str, *, actor: str, reason: str) -> None:
        promote_version(version, actor=actor, reason=reason, settings=self.settings)

    def canary(self, version: str, share: float, *, actor: str, reason: str) -> None:
        canary_version(version, share, actor=actor, reason=reason, settings=self.settings)
