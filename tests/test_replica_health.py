"""A replica too busy to answer its health check in time is slow, not dead: it keeps serving for a few rounds (taking
the last one out would turn every customer away), while one that refuses connections is taken out at once. The same
for a request: a replica that takes no connection in time gets a second try before it is taken out."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from core.models import DEFAULT_BRAND_ID
from serving import replicas
from serving.errors import NoHealthyReplicaError, UpstreamError
from serving.relay import Relay
from serving.replicas import SLOW_ROUNDS_TOLERATED, Health, Replica, ReplicaPool, keeps_serving
from serving.routing import BrandRoutes


@pytest.mark.parametrize(
    ("health", "slow_rounds", "stays"),
    [
        (Health.OK, 0, True),
        (Health.SLOW, 1, True),
        (Health.SLOW, SLOW_ROUNDS_TOLERATED, True),
        (Health.SLOW, SLOW_ROUNDS_TOLERATED + 1, False),
        (Health.DOWN, 0, False),
        (Health.DOWN, 5, False),
    ],
)
def test_which_health_checks_keep_a_replica_in_the_pool(health: Health, slow_rounds: int, stays: bool) -> None:
    assert keeps_serving(health, slow_rounds) is stays


async def slow_health_server(answer_after_s: float) -> asyncio.Server:
    """A real HTTP server on loopback whose /health answers 200 only after `answer_after_s`."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(answer_after_s)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_busy_replica_stays_in_for_a_few_slow_rounds_and_a_refusing_one_goes_at_once() -> None:
    async def scenario() -> tuple[list[bool], list[bool]]:
        server = await slow_health_server(answer_after_s=1.0)
        busy = Replica(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", None)
        gone = Replica(f"http://127.0.0.1:{unused_port()}", None)
        pool = ReplicaPool([busy, gone], health_interval_s=60, on_recovered=lambda replica: asyncio.sleep(0),
                           health_timeout_s=0.2)
        busy.healthy = gone.healthy = True
        busy_seen, gone_seen = [], []
        try:
            for _ in range(SLOW_ROUNDS_TOLERATED + 1):
                await pool.check_once()
                busy_seen.append(busy.healthy)
                gone_seen.append(gone.healthy)
        finally:
            await pool.close()
            server.close()
        return busy_seen, gone_seen

    busy_seen, gone_seen = asyncio.run(scenario())
    assert busy_seen == [True] * SLOW_ROUNDS_TOLERATED + [False]
    assert gone_seen == [False] * (SLOW_ROUNDS_TOLERATED + 1)


async def closing_keepalive_server(answers_per_connection: int) -> asyncio.Server:
    """A real HTTP server on loopback that answers `answers_per_connection` requests on a connection and then
    closes it when the next one arrives, unanswered: what a keep-alive connection the server had already closed
    looks like to the client that takes it from its pool."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(answers_per_connection):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"data": []}')
            await writer.drain()
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("answers_per_connection", "served"),
    [(1, True), (0, False)],
    ids=["a-stale-pooled-connection-is-tried-again", "a-server-that-never-answers-is-an-error"],
)
def test_a_request_on_a_connection_the_replica_closed_is_sent_again_before_it_counts(
    answers_per_connection: int, served: bool
) -> None:
    async def scenario() -> tuple[list[bool], Health]:
        server = await closing_keepalive_server(answers_per_connection)
        replica = Replica(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", None)
        answered = []
        try:
            for _ in range(3):  # the second and third take the pooled connection the server is about to close
                try:  # a POST: aiohttp sends only idempotent requests again by itself
                    answer = await replica.request("POST", "/v1/chat/completions", {"messages": []})
                    answered.append(answer.json() == {"data": []})
                except UpstreamError:
                    answered.append(False)
            return answered, await replica.check_health(timeout_s=2.0)
        finally:
            await replica.close()
            server.close()

    answered, health = asyncio.run(scenario())
    assert answered == [served] * 3
    assert health is (Health.OK if served else Health.DOWN)




def test_after_a_burst_every_pooled_connection_may_be_stale_and_the_request_still_goes_through() -> None:
    """Three answers at once leave three pooled connections, all of which the server then closes: the request sent
    again must not take the next pooled one (as stale as the first) but a new connection."""

    async def scenario() -> bool:
        server = await closing_keepalive_server(answers_per_connection=1)
        replica = Replica(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", None)
        try:
            burst = await asyncio.gather(*(replica.request("POST", "/v1/chat/completions", {"messages": []})
                                           for _ in range(3)))
            assert all(answer.json() == {"data": []} for answer in burst)
            answer = await replica.request("POST", "/v1/chat/completions", {"messages": []})
            return answer.json() == {"data": []}
        finally:
            await replica.close()
            server.close()

    assert asyncio.run(scenario())


def chat_answerer(content: str):
    """An asyncio connection handler that answers one OpenAI chat request with `content`, then closes."""
    body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "base", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # a connection closed unused (the one that filled a queue)
            writer.close()
            return
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    return answer


class BacklogFullReplica:
    """A loopback listener with a full accept queue (backlog 0, one connection already waiting): the kernel drops
    the next SYN, so a connect waits for its retransmission a second later, as on a replica too busy to take one.
    `start_accepting` answers chat requests from then on."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.waiting = socket.create_connection(self.listener.getsockname())
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.server: asyncio.Server | None = None

    async def start_accepting(self) -> None:
        self.server = await asyncio.start_server(chat_answerer("from the busy one"), sock=self.listener)

    def close(self) -> None:
        self.waiting.close()
        if self.server is not None:
            self.server.close()
        self.listener.close()


@pytest.mark.parametrize(
    ("accepts_after_s", "with_a_second_replica", "answer", "busy_stays_in"),
    [
        (0.2, False, "from the busy one", True),  # it takes the second connection: answered, nothing taken out
        (None, False, None, False),  # it never does: two timeouts for one request take it out, the customer waits
        (None, True, "from the other one", True),  # another replica answers; one timeout leaves the busy one in
    ],
    ids=["busy-then-accepting", "never-accepting", "another-replica-answers"],
)
def test_a_replica_too_busy_to_take_a_connection_gets_a_second_try_before_it_is_taken_out(
    monkeypatch: pytest.MonkeyPatch, accepts_after_s: float | None, with_a_second_replica: bool,
    answer: str | None, busy_stays_in: bool,
) -> None:
    monkeypatch.setattr(replicas, "CONNECT_TIMEOUT_S", 0.5)  # under the kernel's 1 s SYN retransmission

    async def scenario() -> tuple[str | None, bool]:
        busy_server = BacklogFullReplica()
        other_server = await asyncio.start_server(chat_answerer("from the other one"), "127.0.0.1", 0)
        busy = Replica(busy_server.url, None)
        fleet = [busy]
        if with_a_second_replica:
            fleet.append(Replica(f"http://127.0.0.1:{other_server.sockets[0].getsockname()[1]}", None))
        for replica in fleet:
            replica.healthy = True
        pool = ReplicaPool(fleet, health_interval_s=60, on_recovered=lambda replica: asyncio.sleep(0))
        relay = Relay(pool, BrandRoutes("base", {DEFAULT_BRAND_ID: "gadgetcorp-assistant"}),
                      repair=lambda *_: asyncio.sleep(0, False))
        if accepts_after_s is not None:
            asyncio.get_running_loop().call_later(
                accepts_after_s, lambda: asyncio.ensure_future(busy_server.start_accepting()))
        try:
            _, payload = await relay.chat({"messages": [{"role": "user", "content": "hi"}]})
            answered = payload["choices"][0]["message"]["content"]
        except NoHealthyReplicaError:
            answered = None
        finally:
            await pool.close()
            busy_server.close()
            other_server.close()
        return answered, busy.healthy

    assert asyncio.run(scenario()) == (answer, busy_stays_in)
