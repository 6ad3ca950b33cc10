"""Following the registry: every `housestyle serve` on one store serves what the registry says, within a bound.

The registry (`core.registry`) is the one truth for what each brand serves: its live version and its canary with
the canary's share. A swap made through one instance writes it there; every other instance re-reads it every
HOUSESTYLE_REGISTRY_FOLLOW_SECONDS (and, on Postgres, as soon as a `NOTIFY` says it changed) and applies the
difference to its own routing tables through the swap protocol (`serving.swaps.AdapterSwaps.follow`): validate,
load under a fresh vLLM name on its replicas, flip, drain and unload the old name. Nothing is written back.

`decide` is the pure part: given what the registry says and what a brand's table serves, the steps that make the
table serve the registry's versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.db import session_scope
from core.models import AdapterStatus, AdapterVersion
from core.registry import REGISTRY_CHANNEL, adapters_with_status, went_live

log = logging.getLogger("housestyle.serving")


@dataclass(frozen=True)
class Wanted:
    """What the registry says one brand serves."""

    live: str | None = None
    live_path: str | None = None
    live_via: str = "promote"  # the event that made it live: "promote" or "rollback"
    canary: str | None = None
    canary_path: str | None = None
    canary_share: float = 0.0
    live_name: str | None = None  # shared replicas: the vLLM names the registry records (None: none yet)
    canary_name: str | None = None


@dataclass(frozen=True)
class Serving:
    """What one brand's routing table serves now."""

    live: str | None = None
    canary: str | None = None
    canary_share: float = 0.0


@dataclass(frozen=True)
class Step:
    """One change to a brand's table: "promote" / "rollback" (make `version` live; None: the base model alone),
    "canary" (route `share` of new conversations to `version`), "end-canary"."""

    action: str
    version: str | None = None
    share: float = 0.0
    path: str | None = None
    name: str | None = None  # the vLLM name the registry records for it (shared replicas)


def decide(wanted: Wanted, serving: Serving) -> list[Step]:
    """The steps, in order, that make a table serving `serving` serve `wanted`; [] when it already does.

    The live version changes first (a canary that became live is flipped, not loaded again), then the canary: an
    ended canary is unloaded, a new one loaded, a changed share only changes the split.
    """
    steps: list[Step] = []
    canary_now, share_now = serving.canary, serving.canary_share
    if wanted.live != serving.live:
        action = "rollback" if wanted.live_via == "rollback" or wanted.live is None else "promote"
        steps.append(Step(action, wanted.live, path=wanted.live_path, name=wanted.live_name))
        if canary_now is not None and canary_now == wanted.live:
            canary_now, share_now = None, 0.0  # the canary became the live version: the flip takes it off the split
    if wanted.canary is None:
        if canary_now is not None:
            steps.append(Step("end-canary", canary_now))
    elif wanted.canary != canary_now or wanted.canary_share != share_now:
        steps.append(Step("canary", wanted.canary, share=wanted.canary_share, path=wanted.canary_path,
                          name=wanted.canary_name))
    return steps


def read_registry(database_url: str, brand_ids: list[int]) -> dict[int, Wanted]:
    """Each brand's `Wanted` as the registry says now (blocking: run it in a thread, never under the swap lock)."""
    wanted: dict[int, Wanted] = {}
    with session_scope(database_url) as session:
        for brand in brand_ids:
            live: list[AdapterVersion] = adapters_with_status(session, AdapterStatus.LIVE, brand)[:1]
            canary: list[AdapterVersion] = adapters_with_status(session, AdapterStatus.CANARY, brand)[:1]
            event = went_live(session, live[0].version) if live else None
            wanted[brand] = Wanted(
                live=live[0].version if live else None,
                live_path=live[0].path if live else None,
                live_via=event.action if event is not None else "promote",
                canary=canary[0].version if canary else None,
                canary_path=canary[0].path if canary else None,
                canary_share=canary[0].canary_share if canary else 0.0,
                live_name=live[0].vllm_name if live else None,
                canary_name=canary[0].vllm_name if canary else None,
            )
    return wanted


class RegistryListener:
    """Postgres only: a thread LISTENing on the registry's channel that calls `wake` on each NOTIFY. Best effort:
    the periodic re-read is the safety net, so a lost connection only logs and reconnects."""

    def __init__(self, database_url: str, wake: Callable[[], None]) -> None:
        self.database_url, self.wake = database_url, wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housestyle-registry-listen", daemon=True)

    @staticmethod
    def supported(database_url: str) -> bool:
        return database_url.startswith(("postgresql", "postgres"))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _conninfo(self) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo(), autocommit=True) as connection:
                    connection.execute(f"LISTEN {REGISTRY_CHANNEL}")
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except Exception as exc:  # noqa: BLE001 (any failure: the periodic re-read still follows)
                log.warning("listening for registry changes failed (%s); retrying, the periodic re-read goes on", exc)
                self._stop.wait(2.0)


class RegistryFollower:
    """The gateway's background task: re-read the registry every `interval_s` (or when woken) and apply it."""

    def __init__(self, *, interval_s: float, database_url: str, brand_ids: Callable[[], list[int]],
                 generation: Callable[[], int], apply: Callable[[dict[int, Wanted], int], Awaitable[None]]) -> None:
        self.interval_s, self.database_url = interval_s, database_url
        self.brand_ids, self.generation, self.apply = brand_ids, generation, apply
        self._task: asyncio.Task | None = None
        self._woken: asyncio.Event | None = None
        self._listener: RegistryListener | None = None
        self.rounds = 0  # registry reads done (for tests and status)

    def start(self) -> None:
        if self.interval_s <= 0 or self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()
        if RegistryListener.supported(self.database_url):
            woken = self._woken
            self._listener = RegistryListener(self.database_url, lambda: loop.call_soon_threadsafe(woken.set))
            self._listener.start()
        self._task = asyncio.create_task(self._run(), name="housestyle-registry-follow")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def follow_once(self) -> None:
        """One round: read the registry (in a thread) and apply what differs."""
        generation = self.generation()  # before the read: a local swap after it makes the round skip
        wanted = await asyncio.to_thread(read_registry, self.database_url, self.brand_ids())
        self.rounds += 1
        await self.apply(wanted, generation)

    async def _run(self) -> None:
        assert self._woken is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.interval_s)
            self._woken.clear()
            try:
                await self.follow_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the store or a replica failing must not end following)
                log.warning("following the registry failed this round (%s); trying again in %.1fs", exc,
                            self.interval_s)
