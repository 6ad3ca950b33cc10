"""Relaying OpenAI chat requests to vLLM replicas: least in flight first, failover, and repair of lost adapters.

A replica that fails a request at the connection level is taken out of the pool and the next one is tried; one that
takes no connection in time is busy, not gone, and is taken out only when it does so twice for a request. A
replica that answers 404 for one of our adapter names lost it (unloaded from outside, or restarted before a health
check noticed): the adapter is loaded there again and the request retried once, instead of failing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from core.models import DEFAULT_BRAND_ID
from serving.errors import UpstreamError
from serving.replicas import CLIENT_ERRORS, REPLICA_DOWN_ERRORS, Replica, ReplicaPool, UpstreamReply, upstream_message
from serving.routing import BrandRoutes, Route

log = logging.getLogger("housestyle.serving")

Repair = Callable[[Replica, str], Awaitable[bool]]  # (replica, vLLM name) -> True when it serves the name again


def fingerprint(route: Route) -> str:
    return f"housestyle:{route.version or 'base'}"


class ChatStream:
    """OpenAI chat.completion.chunk dicts from one replica, with the public model name and the version fingerprint."""

    def __init__(self, relay: Relay, route: Route, replica: Replica, response: aiohttp.ClientResponse) -> None:
        self.route = route
        self._relay = relay
        self._response = response
        self._replica = replica
        self._closed = False
        self._finished = False  # [DONE] was read: the connection can go back to the pool

    @property
    def replica_url(self) -> str:
        """The replica this stream comes from (least in flight when it started)."""
        return self._replica.url

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
        content = self._response.content
        try:
            while line := await content.readline():
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    await content.read()  # the stream's last bytes, so its connection is reused
                    self._finished = True
                    return None
                chunk = json.loads(data)
                if "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise UpstreamError(f"vLLM failed mid-stream: {message}")
                chunk["model"] = self.route.public_model
                chunk["system_fingerprint"] = fingerprint(self.route)
                return chunk
        except CLIENT_ERRORS as exc:
            if isinstance(exc, REPLICA_DOWN_ERRORS):
                self._relay.pool.mark_unhealthy(self._replica, f"stream broke: {exc!r}")
            raise UpstreamError(f"vLLM at {url} failed mid-stream ({exc!r}); the reply is incomplete") from None
        except ValueError as exc:  # a line that is not JSON, or longer than the client reads as one line
            raise UpstreamError(f"vLLM at {url} sent what is not an OpenAI stream ({exc}); the reply is incomplete"
                                ) from None
        raise UpstreamError(f"vLLM at {url} ended the stream without [DONE]; the reply is incomplete")

    async def aclose(self) -> None:
        """Stop reading and release the replica connection and the version's in-flight count (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._replica.in_flight -= 1
        try:
            if self._finished:
                self._response.release()
            else:  # stopped early: closing the connection tells vLLM to stop generating
                self._response.close()
        finally:
            await self._relay.routes.release(self.route)


class Relay:
    """Sends chat requests for a brand's current version to the pool's least busy healthy replica."""

    def __init__(self, pool: ReplicaPool, routes: BrandRoutes, repair: Repair) -> None:
        self.pool, self.routes, self.repair = pool, routes, repair

    async def chat(self, request: dict[str, Any], *, conversation_key: str | None = None,
                   brand_id: int = DEFAULT_BRAND_ID) -> tuple[Route, dict]:
        """Send a non-streaming OpenAI chat request for the brand; return its route and the response with the
        brand's public model name.

        Raises NoHealthyReplicaError (no replica can take it) or UpstreamError (vLLM refused it: `status_code`).
        """
        route = self.routes.acquire(brand_id, conversation_key)
        try:
            replica, reply = await self._send({**request, "model": route.vllm_model, "stream": False}, stream=False)
            try:
                payload = reply.json()
            except ValueError:
                raise UpstreamError(f"vLLM at {replica.url} answered with a body that is not JSON: "
                                    f"{reply.text[:200]!r}") from None
            payload["model"] = route.public_model
            payload["system_fingerprint"] = fingerprint(route)
            return route, payload
        finally:
            await self.routes.release(route)

    async def stream_chat(
        self, request: dict[str, Any], *, conversation_key: str | None = None, brand_id: int = DEFAULT_BRAND_ID
    ) -> tuple[Route, ChatStream]:
        """Start a streaming chat request; return its route and a ChatStream of chunk dicts (`[DONE]` is not yielded).

        Errors before the first byte raise here (NoHealthyReplicaError, UpstreamError). A replica dying mid-stream
        makes the iteration raise UpstreamError (never hang). The version stays counted in flight until the stream
        ends or `aclose()` is called (call it in a `finally` if you may stop early), so a swap waits for it.
        """
        route = self.routes.acquire(brand_id, conversation_key)
        try:
            replica, response = await self._send({**request, "model": route.vllm_model, "stream": True}, stream=True)
        except BaseException:
            await self.routes.release(route)
            raise
        return route, ChatStream(self, route, replica, response)

    async def _send(
        self, body: dict[str, Any], *, stream: bool
    ) -> tuple[Replica, aiohttp.ClientResponse | UpstreamReply]:
        """POST to the least busy healthy replica; a replica that is down is taken out and the next one tried.
        A stream comes back open, counted in flight on its replica; otherwise the whole answer, read."""
        tried: set[str] = set()
        repaired: set[str] = set()
        slow: set[str] = set()  # replicas that did not take a connection in time for this request
        while True:
            replica = self.pool.pick(exclude=tried)
            tried.add(replica.url)
            replica.in_flight += 1
            try:
                response = await replica.send("POST", "/v1/chat/completions", json=body)
            except aiohttp.ConnectionTimeoutError as exc:
                replica.in_flight -= 1
                if replica.url in slow:
                    self.pool.mark_unhealthy(replica, f"no connection in time, twice for one request: {exc!r}")
                    continue
                self._retry_busy(replica, tried, slow)
                continue
            except REPLICA_DOWN_ERRORS as exc:
                replica.in_flight -= 1
                self.pool.mark_unhealthy(replica, f"request failed: {exc!r}")
                continue
            except CLIENT_ERRORS as exc:
                replica.in_flight -= 1
                raise UpstreamError(f"vLLM at {replica.url} did not answer: {exc!r}") from None
            except BaseException:
                replica.in_flight -= 1
                raise
            if response.status >= 400:
                try:
                    refused = UpstreamReply(response.status, await response.read())
                except CLIENT_ERRORS:
                    refused = UpstreamReply(response.status, b"")
                finally:
                    response.release()
                replica.in_flight -= 1
                if refused.status_code == 404 and body["model"] in upstream_message(refused):
                    # the replica lost the adapter: load it again there and retry once, else take the replica out
                    if replica.url not in repaired and await self.repair(replica, body["model"]):
                        repaired.add(replica.url)
                        tried.discard(replica.url)
                        continue
                    self.pool.mark_unhealthy(replica, f"does not know {body['model']}")
                    continue
                raise UpstreamError(f"vLLM refused the request: {upstream_message(refused)}", refused.status_code)
            if stream:
                return replica, response
            try:
                return replica, UpstreamReply(response.status, await response.read())
            except REPLICA_DOWN_ERRORS as exc:
                self.pool.mark_unhealthy(replica, f"response broke: {exc!r}")
                continue
            except CLIENT_ERRORS as exc:
                raise UpstreamError(f"vLLM at {replica.url} failed while answering: {exc!r}") from None
            finally:
                response.release()
                replica.in_flight -= 1

    def _retry_busy(self, replica: Replica, tried: set[str], slow: set[str]) -> None:
        """A replica that did not take a connection in time is busy, not gone (as a health check that times out is
        slow, not down): the request goes to another replica, or to it once more when none is left (it never
        reached it); only a second time counts against it."""
        slow.add(replica.url)
        if not any(other.url not in tried for other in self.pool.healthy()):
            tried.discard(replica.url)
        log.warning("replica %s took no connection in time; sending the request %s", replica.url,
                    "to it again" if replica.url not in tried else "to another replica")
