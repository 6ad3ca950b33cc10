"""A replica too busy to answer its health check in time is slow, not dead: it keeps serving for a few rounds (taking
the last one out would turn every customer away), while one that refuses connections is taken out at once."""

from __future__ import annotations

import asyncio
import socket

import pytest

from serving.errors import UpstreamError
from serving.replicas import SLOW_ROUNDS_TOLERATED, Health, Replica, ReplicaPool, keeps_serving


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
