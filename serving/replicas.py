"""The replica pool: one HTTP client per vLLM server, health checks, least-in-flight balancing, adapter load/unload.

The client is aiohttp's: every chat request of the service goes through it, and on the same 2 cores as the model
it cost half the CPU httpx did (bench/plugin_load.py against an instant upstream: 3.3 -> 1.75 ms a request for the
whole service).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from pydantic import BaseModel

from core.adapter_store import AdapterStore, AdapterStoreError, open_adapter_store
from core.settings import Settings
from serving.errors import NoHealthyReplicaError, UpstreamError
from serving.vllm_names import version_of_vllm_name

log = logging.getLogger("housestyle.serving")

# a plain completion works for every base model, with or without a chat template
SMOKE_REQUEST = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
KEEPALIVE_EXPIRY_S = 2.0  # an idle connection to a replica is closed by us after this, before vLLM closes it
SLOW_ROUNDS_TOLERATED = 2  # health checks in a row that may time out before a busy replica is taken out
# a connect on loopback or a LAN takes a millisecond or is refused at once; the timeout is measured on our own event
# loop, which lagged up to 3.4 s under a burst of 200 customers on a CPU shared with vLLM (at 5 s a healthy replica
# was taken out): it only has to catch a host that drops packets, which the health checks also find
CONNECT_TIMEOUT_S = 15.0
# errors that mean the replica is gone (not that the request was bad): refused, reset, closed mid-answer, no
# connection in time (the relay gives that one a second try: a busy server is slow to take one). A read that times
# out is not among them: a long generation is slow, not dead.
REPLICA_DOWN_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                       aiohttp.ClientPayloadError, aiohttp.ConnectionTimeoutError)
CLIENT_ERRORS = (aiohttp.ClientError, TimeoutError)  # anything the client can raise for a request that failed
# what a pooled connection the replica had already closed gives before the request reaches it (vLLM closes an idle
# connection 5 s after it wrote the last byte of an answer, which can be long before we finish reading a big one)
STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class Health(StrEnum):
    """What one health check found: answering, gone (refused, error status), or too slow to answer in time."""

    OK = "ok"
    DOWN = "down"
    SLOW = "slow"


def keeps_serving(health: Health, slow_rounds: int) -> bool:
    """Whether a replica in the pool stays in after this check: a server too busy to answer /health in time is
    slow, not dead (taking the last one out would turn every customer away), until it stays slow too long."""
    return health is Health.OK or (health is Health.SLOW and slow_rounds <= SLOW_ROUNDS_TOLERATED)


class VllmModel(BaseModel):
    """One entry of vLLM's `/v1/models`: the base (parent None) or a loaded LoRA adapter."""

    model_config = {"extra": "ignore"}

    id: str
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None  # the context window, prompt and reply together


class ReplicaStatus(BaseModel):
    url: str
    healthy: bool
    in_flight: int
    loaded_adapters: list[str]


@dataclass(frozen=True)
class UpstreamReply:
    """A replica's whole answer to one call: its status and body."""

    status_code: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Replica:
    """One vLLM OpenAI server, reached through its own long-lived HTTP client. With an adapter `store`
    (HOUSESTYLE_ADAPTER_STORE) it asks for a version by name, and vLLM's resolver fetches it from the store
    (`serving.lora_resolver`); without one it hands vLLM the adapter folder's path on this host."""

    def __init__(self, url: str, api_key: str | None, *, timeout_s: float = 600.0,
                 store: AdapterStore | None = None) -> None:
        self.url = url.rstrip("/")
        self.store = store
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # connect: a free connection of the pool and the TCP connect; sock_read: between two reads of an answer
        self.timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_connect=CONNECT_TIMEOUT_S,
                                             sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None  # no pooling: for a request a pooled connection failed
        self.healthy = False
        self.slow_rounds = 0  # health checks in a row that timed out
        self.admitted_at: float | None = None  # time.monotonic() when it last (re)joined the pool
        self.in_flight = 0
        self.loaded_adapters: set[str] = set()

    @classmethod
    def configured(cls, url: str, api_key: str | None, settings: Settings) -> Replica:
        """A replica that loads adapters the way the settings say: from HOUSESTYLE_ADAPTER_STORE, else by path."""
        return cls(url, api_key, store=open_adapter_store(settings))

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(
            url=self.url, healthy=self.healthy, in_flight=self.in_flight, loaded_adapters=sorted(self.loaded_adapters)
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The replica's one client, made on first use inside the event loop that uses it.

        A generous pool: every concurrent chat holds one connection for its whole stream. Idle connections are
        dropped well before vLLM's own keep-alive timeout (VLLM_HTTP_TIMEOUT_KEEP_ALIVE, 5 s): at 5 s too, a
        request could go out on a connection the server was closing, read nothing, and take the replica out of
        the pool (a 503 in bench/plugin_load.py after an idle pause)."""
        if self._session is None or self._session.closed:
            self._session = self._client(aiohttp.TCPConnector(limit=512, keepalive_timeout=KEEPALIVE_EXPIRY_S))
        return self._session

    @property
    def fresh_session(self) -> aiohttp.ClientSession:
        """A client that opens a new connection for every request and keeps none."""
        if self._fresh is None or self._fresh.closed:
            self._fresh = self._client(aiohttp.TCPConnector(limit=0, force_close=True))
        return self._fresh

    def _client(self, connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(headers=self.headers, connector=connector, timeout=self.timeout)

    async def send(
        self, method: str, path: str, *, json: Any = None, timeout: aiohttp.ClientTimeout | None = None
    ) -> aiohttp.ClientResponse:
        """One request to this replica (its key sent); the response comes back open: read it, then release or
        close it. A request that fails on a pooled connection the replica had closed is sent once more, on a new
        connection (a request that never reached the replica is safe to repeat, and after a burst the next pooled
        connection may be just as stale): only then does the error count against the replica."""
        options = {"json": json} if timeout is None else {"json": json, "timeout": timeout}
        try:
            return await self.session.request(method, f"{self.url}{path}", **options)
        except STALE_CONNECTION_ERRORS as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):  # no connection at all: nothing stale about it
                raise
            log.debug("replica %s closed a pooled connection (%r); sending %s again", self.url, exc, path)
            return await self.fresh_session.request(method, f"{self.url}{path}", **options)

    async def check_health(self, timeout_s: float) -> Health:
        try:
            async with await self.send("GET", "/health", timeout=aiohttp.ClientTimeout(total=timeout_s)) as answer:
                return Health.OK if answer.status == 200 else Health.DOWN
        except TimeoutError:
            return Health.SLOW
        except aiohttp.ClientError:
            return Health.DOWN

    async def list_models(self) -> list[VllmModel]:
        response = await self.request("GET", "/v1/models", None)
        return [VllmModel.model_validate(item) for item in response.json().get("data", [])]

    async def base_model(self) -> VllmModel:
        """The base model entry (the one without a parent)."""
        for model in await self.list_models():
            if model.parent is None:
                return model
        raise UpstreamError(f"vLLM at {self.url} lists no base model in /v1/models")

    async def load_adapter(self, vllm_name: str, path: str, *, smoke: bool = True) -> None:
        """Load an adapter under a fresh name, then confirm vLLM lists it and can generate with it (`smoke` False:
        the caller generates with it next anyway, e.g. its fingerprint probe). With a store, `path` is not used:
        the version in the name is fetched from the store (see `_load_from_store`)."""
        if self.store is not None:
            await self._load_from_store(vllm_name)
        else:
            await self.request("POST", "/v1/load_lora_adapter", {"lora_name": vllm_name, "lora_path": path})
        self.loaded_adapters.add(vllm_name)
        if vllm_name not in {model.id for model in await self.list_models()}:
            raise UpstreamError(f"vLLM at {self.url} accepted adapter {vllm_name} but does not list it")
        if not smoke or self.store is not None:  # loading from the store generated with it already
            return
        response = await self.request("POST", "/v1/completions", {**SMOKE_REQUEST, "model": vllm_name})
        if not response.json().get("choices"):
            raise UpstreamError(f"vLLM at {self.url} returned no choices from adapter {vllm_name}")

    async def _load_from_store(self, vllm_name: str) -> None:
        """Check the store's copy of the name's version here first (what this host can check), then ask vLLM for
        the name with a completion: its resolver fetches and checks the version on the vLLM host, and loads it."""
        assert self.store is not None
        version = version_of_vllm_name(vllm_name)
        if version is None:
            raise UpstreamError(f"{vllm_name} names no adapter version, so it cannot be loaded from the adapter store")
        try:
            await asyncio.to_thread(self.store.fetch_verified, version)
        except AdapterStoreError as exc:
            raise UpstreamError(f"not loading {version} on {self.url}: {exc}", status_code=409) from None
        try:
            response = await self.request("POST", "/v1/completions", {**SMOKE_REQUEST, "model": vllm_name})
        except UpstreamError as exc:
            if exc.status_code not in (400, 404):
                raise
            raise UpstreamError(
                f"vLLM at {self.url} did not load {version} from the adapter store {self.store.location} "
                f"({exc.status_code}): its log names the file that failed its check, or the store it could not "
                "read; every vLLM host needs HOUSESTYLE_ADAPTER_STORE, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and "
                "HouseStyle installed (its LoRA resolver)", status_code=exc.status_code,
            ) from None
        if not response.json().get("choices"):
            raise UpstreamError(f"vLLM at {self.url} returned no choices from adapter {vllm_name}")

    async def unload_adapter(self, vllm_name: str) -> None:
        """Unload a name; an already-missing name (e.g. the server restarted) counts as unloaded."""
        self.loaded_adapters.discard(vllm_name)
        try:
            await self.request("POST", "/v1/unload_lora_adapter", {"lora_name": vllm_name})
        except UpstreamError as exc:
            if exc.status_code not in (400, 404):
                raise

    async def request(self, method: str, path: str, body: dict | None) -> UpstreamReply:
        """One call to this replica's API (its key sent); no answer or a 4xx/5xx is an UpstreamError saying which."""
        try:
            async with await self.send(method, path, json=body) as answer:
                response = UpstreamReply(answer.status, await answer.read())
        except CLIENT_ERRORS as exc:
            raise UpstreamError(f"vLLM at {self.url} did not answer {path}: {exc!r}") from None
        if response.status_code >= 400:
            raise UpstreamError(
                f"vLLM at {self.url} answered {path} with {response.status_code}: {upstream_message(response)}",
                status_code=response.status_code,
            )
        return response

    async def close(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()


def upstream_message(response: UpstreamReply) -> str:
    """vLLM's error message from an OpenAI-style error body, else the raw text."""
    try:
        body = response.json()
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)[:500]
    except ValueError:
        return response.text[:500]


class ReplicaPool:
    """Healthy replicas take requests (least in flight first); unhealthy ones rejoin after `on_recovered` succeeds."""

    def __init__(
        self,
        replicas: list[Replica],
        *,
        health_interval_s: float,
        on_recovered: Callable[[Replica], Awaitable[None]],
        health_timeout_s: float = 5.0,
    ) -> None:
        self.replicas = replicas
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.on_recovered = on_recovered
        self._task: asyncio.Task | None = None

    def healthy(self) -> list[Replica]:
        return [replica for replica in self.replicas if replica.healthy]

    def pick(self, exclude: set[str] = frozenset()) -> Replica:
        candidates = [replica for replica in self.healthy() if replica.url not in exclude]
        if not candidates:
            raise NoHealthyReplicaError(
                "no vLLM replica is healthy right now; retry shortly (the supervisor restarts managed servers), "
                "or check the vLLM logs under HOUSESTYLE_HOME/logs"
            )
        return min(candidates, key=lambda replica: replica.in_flight)

    def mark_unhealthy(self, replica: Replica, why: str) -> None:
        if replica.healthy:
            log.warning("replica %s taken out of the pool: %s", replica.url, why)
        replica.healthy = False
        replica.loaded_adapters.clear()

    async def check_once(self) -> None:
        """One health round: drop failing replicas, re-admit recovered ones after their adapters are reloaded."""
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))

    async def _check(self, replica: Replica) -> None:
        health = await replica.check_health(self.health_timeout_s)
        replica.slow_rounds = replica.slow_rounds + 1 if health is Health.SLOW else 0
        if health is not Health.OK:
            if not keeps_serving(health, replica.slow_rounds):
                self.mark_unhealthy(replica, f"health check failed ({health}, {replica.slow_rounds} slow in a row)")
            return
        if replica.healthy:
            return
        try:
            await self.on_recovered(replica)
        except Exception as exc:  # noqa: BLE001 - keep the replica out and retry on the next round
            log.warning("replica %s is up but not ready yet: %s", replica.url, exc)
            return
        replica.healthy, replica.admitted_at = True, time.monotonic()
        log.info("replica %s is in the pool", replica.url)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="housestyle-health")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            try:
                await self.check_once()
            except Exception:  # the health loop must never die; the next round tries again
                log.exception("health round failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(replica.close() for replica in self.replicas))
