"""Faults in serving with real vLLM: two managed replicas under load, one killed. The other keeps serving, requests
go to the replica with the fewest in flight, the service's event loop never stalls while the dead one is reaped and
restarted, and it rejoins with the live version. vLLM's key never appears on a command line."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from collector.db import open_store
from collector.settings import Settings
from serving.errors import UpstreamError
from serving.gateway import ServingGateway
from serving.vllm_server import replica_cpu_lists, vllm_command, vllm_environment
from tests.fixtures.vllm import make_lora_adapter, register_adapter_folder

QUESTION = {"messages": [{"role": "user", "content": "Where is my order?"}], "max_tokens": 8, "temperature": 0,
            "ignore_eos": True}
LONG = {**QUESTION, "max_tokens": 1500}  # still streaming when the replica is killed


def test_the_vllm_key_goes_in_the_environment_not_on_the_command_line(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, base_model=str(tmp_path / "base"))
    key = "-starts-with-a-dash-" + "k" * 20
    command = vllm_command(settings, port=8123)
    assert not any(key in part for part in command) and not any(part.startswith("--api-key") for part in command)
    assert vllm_environment(settings, api_key=key)["VLLM_API_KEY"] == key


@pytest.mark.parametrize(
    ("cpus", "replicas", "expected"),
    [
        ([0, 1], 1, None),  # one server: vLLM's own binding
        ([0, 1], 2, ["0", "1"]),
        ([0, 1, 2, 3, 4, 5, 6, 7], 2, ["0,1,2,3", "4,5,6,7"]),
        ([3, 0, 2, 1, 4], 2, ["0,1", "2,3"]),  # an odd one out stays free for the API servers
        ([0], 2, None),  # fewer CPUs than servers: cannot give each its own
    ],
)
def test_managed_replicas_get_cpus_of_their_own(cpus: list[int], replicas: int, expected: list[str] | None) -> None:
    assert replica_cpu_lists(cpus, replicas) == expected


def process_text(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


async def read_to_end(stream) -> tuple[str, str | None]:
    text, finish = "", None
    async for chunk in stream:
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
            finish = choice.get("finish_reason") or finish
    return text, finish


class Load:
    """Customers asking all the time: `workers` short streamed chats at once, each outcome kept with its start."""

    def __init__(self, gateway: ServingGateway, workers: int = 3) -> None:
        self.gateway, self.workers = gateway, workers
        self.outcomes: list[tuple[float, str, str | None]] = []  # (started, replica url or "", error or None)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def _customer(self) -> None:
        while not self._stop.is_set():
            started, url = time.monotonic(), ""
            try:
                _, chunks = await self.gateway.stream_chat(QUESTION)
                url = chunks.replica_url
                _, finish = await read_to_end(chunks)
                assert finish == "length"
                self.outcomes.append((started, url, None))
            except UpstreamError as exc:
                self.outcomes.append((started, url, str(exc)))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._customer()) for _ in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        await asyncio.gather(*tasks)


class LoopWatch:
    """How late a 50 ms sleep on the service's own event loop wakes up, beside the same sleep in a plain thread of
    this process: a call blocking the loop makes only the loop late; a machine too busy to run us makes both late."""

    def __init__(self) -> None:
        self.loop_late: list[tuple[float, float]] = []  # (when, seconds late)
        self.thread_late: list[tuple[float, float]] = []
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    async def _tick(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.05)
            self.loop_late.append((before, time.monotonic() - before - 0.05))

    def _thread_tick(self) -> None:
        while not self._stop.is_set():
            before = time.monotonic()
            time.sleep(0.05)
            self.thread_late.append((before, time.monotonic() - before - 0.05))

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())
        self._thread = threading.Thread(target=self._thread_tick, daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._stop.set()
            self._thread.join()

    def loop_blocked_s(self) -> float:
        """The longest the loop was late beyond what the thread saw around the same moment."""
        worst = 0.0
        for when, late in self.loop_late:
            nearby = [t for at, t in self.thread_late if when - 1 <= at <= when + late + 1]
            worst = max(worst, late - max(nearby, default=0.0))
        return worst

    def stalls(self, since: float) -> list[tuple[float, float, float]]:
        """(s after `since`, loop s late, thread s late nearby) for every loop wake-up over 0.5 s late."""
        return [(round(when - since, 1), round(late, 1),
                 round(max([t for at, t in self.thread_late if when - 1 <= at <= when + late + 1], default=0.0), 1))
                for when, late in self.loop_late if late > 0.5]


@pytest.mark.vllm
@pytest.mark.slow
def test_two_replicas_under_load_one_killed_the_other_serves_and_the_killed_one_rejoins_with_the_live_version(
    serving_base: Path, tmp_path: Path
) -> None:
    url = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    settings = Settings(home=tmp_path / "home", database_url=url, base_model=str(serving_base), vllm_replicas=2,
                        max_lora_rank=16, max_loras=4, health_interval_s=0.5, vllm_extra_args="--max-num-seqs 8")
    live = register_adapter_folder(make_lora_adapter(serving_base, tmp_path / "adapter", seed=5), serving_base,
                                   database_url=url)

    async def scenario() -> None:
        gateway = ServingGateway(settings, database_url=url)
        load, watch = Load(gateway), LoopWatch()
        await gateway.start()
        try:
            first, second = gateway.servers
            # the key is honoured from the environment and appears on no command line (`ps` shows those to anyone)
            for server in gateway.servers:
                assert gateway.api_key.encode() not in process_text(server.process.pid, "cmdline")
                environ = process_text(server.process.pid, "environ").split(b"\0")
                assert f"VLLM_API_KEY={gateway.api_key}".encode() in environ
                if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ and len(os.sched_getaffinity(0)) >= 2:
                    assert f"VLLM_CPU_OMP_THREADS_BIND={server.cpu_bind}".encode() in environ
                async with httpx.AsyncClient(base_url=server.url) as raw:
                    assert (await raw.get("/v1/models")).status_code == 401
                    auth = {"Authorization": f"Bearer {gateway.api_key}"}
                    assert (await raw.get("/v1/models", headers=auth)).status_code == 200

            await gateway.promote(live, actor="test")
            vllm_live = gateway.status().vllm_names[live]

            # least in flight: four long streams started one after another land two on each replica
            long_streams = [(await gateway.stream_chat(LONG))[1] for _ in range(4)]
            for stream in long_streams:
                await stream.__anext__()
            assert sorted(r.in_flight for r in gateway.status().replicas) == [2, 2]
            assert {s.replica_url for s in long_streams} == {first.url, second.url}

            load.start()
            watch.start()
            await asyncio.sleep(3)
            old_pid = first.process.pid
            killed_at = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)  # the API server only: its engine processes linger until reaped

            # the streams on the killed replica end with a clean error; those on the other one finish
            for stream in long_streams:
                if stream.replica_url == first.url:
                    with pytest.raises(UpstreamError, match="incomplete"):
                        await read_to_end(stream)
                else:
                    assert (await read_to_end(stream))[1] == "length"

            deadline, relaunched_at = time.monotonic() + 600, None
            while not (first.process.pid != old_pid and gateway.status().replicas[0].healthy):
                assert time.monotonic() < deadline, "the killed replica never rejoined"
                if relaunched_at is None and first.process.pid != old_pid:
                    relaunched_at = time.monotonic() - killed_at
                await asyncio.sleep(0.2)
            rejoined_at = time.monotonic()
            await asyncio.sleep(3)  # a little load on both again
            await load.stop()
            await watch.stop()

            # nobody who asked after the kill was turned away: the other replica served them until it rejoined
            after_kill = [o for o in load.outcomes if o[0] > killed_at + 0.5]
            assert after_kill and all(error is None for _, _, error in after_kill), after_kill
            while_down = [o for o in after_kill if o[0] < rejoined_at - 1]
            assert while_down and {replica for _, replica, _ in while_down} == {second.url}
            failed = [o for o in load.outcomes if o[2] is not None]
            assert all(started <= killed_at + 0.5 for started, _, _ in failed)  # only those in flight on it
            # the loop kept answering while the dead server was reaped (up to 10 s) and a new one started
            # the loop kept answering while the dead server was reaped (that waits up to 10 s) and a new one started
            assert watch.loop_blocked_s() < 1.0, (
                "the event loop was blocked: (s after the kill, loop s late, thread s late) "
                f"{watch.stalls(killed_at)}; "
                f"relaunched {relaunched_at or -1:.1f} s and back {rejoined_at - killed_at:.1f} s after the kill")

            # it is back with the live version loaded, and serves it the same as the other replica does
            status = gateway.status()
            assert first.restarts == 1 and [r.loaded_adapters for r in status.replicas] == [[vllm_live], [vllm_live]]
            pair = [(await gateway.stream_chat(QUESTION))[1] for _ in range(2)]
            assert {s.replica_url for s in pair} == {first.url, second.url}
            assert all(s.route.version == live for s in pair)
            answers = [await read_to_end(s) for s in pair]
            assert answers[0] == answers[1] and answers[0][1] == "length"
        finally:
            await watch.stop()
            await asyncio.gather(load.stop(), return_exceptions=True)
            await gateway.stop()
        for server in gateway.servers:
            with pytest.raises(ProcessLookupError):
                os.killpg(server.process.pid, 0)

    asyncio.run(scenario())
