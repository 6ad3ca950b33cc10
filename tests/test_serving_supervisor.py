"""vLLM lifecycle: a server killed mid-stream gives a clean error and comes back with the live version; start errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from core.settings import Settings
from serving.errors import NoHealthyReplicaError, UpstreamError, VllmStartError
from serving.vllm_server import VllmServer
from tests.fixtures.vllm import register_adapter_folder, running_gateway
from tests.test_serving_swap import QUESTION, ask, reference_answer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_vllm_killed_mid_stream_ends_the_stream_cleanly_and_comes_back_with_the_live_version(
    serving_settings: Settings, vllm_server, lora_adapters
):
    live = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)
    server: VllmServer = vllm_server.server

    async def scenario():
        expected = await reference_answer(vllm_server, lora_adapters["gadgetcorp"])
        server.supervise()
        try:
            async with running_gateway(serving_settings) as gateway:
                await gateway.promote(live, actor="test")
                # long enough that the kill lands mid-generation even when the test process is slow to read
                long_answer = {**QUESTION, "max_tokens": 1500, "ignore_eos": True}
                route, chunks = await gateway.stream_chat(long_answer)
                assert route.version == live
                await chunks.__anext__()
                old_pid = server.process.pid
                os.killpg(old_pid, signal.SIGKILL)
                with pytest.raises(UpstreamError, match="incomplete"):
                    async for _ in chunks:
                        pass
                assert gateway.status().in_flight == {}
                with pytest.raises(NoHealthyReplicaError):
                    await gateway.chat(QUESTION)

                # customers get 503 + Retry-After until the restarted server has the live version loaded again;
                # the health loop may take the replica out once more while vLLM finishes starting, so poll
                deadline = time.monotonic() + 600
                answer = None
                while answer is None and time.monotonic() < deadline:
                    if not gateway.ready():
                        await asyncio.sleep(0.5)
                        continue
                    try:
                        answer = await ask(gateway, stream=True)
                    except NoHealthyReplicaError:
                        await asyncio.sleep(0.5)
                assert server.process.pid != old_pid and server.restarts >= 1
                assert answer == (live, expected, "length")
                status = gateway.status()
                assert status.live == live and status.replicas[0].loaded_adapters == [status.vllm_names[live]]
        finally:
            await server.stop_supervising()

    asyncio.run(scenario())


def test_a_vllm_that_dies_while_starting_reports_its_log_and_leaves_nothing_running(tmp_path: Path):
    broken_base = tmp_path / "broken-base"
    broken_base.mkdir()
    (broken_base / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    server = VllmServer(Settings(home=tmp_path / "home", base_model=str(broken_base)), api_key="unused")

    with pytest.raises(VllmStartError, match="exited with code") as error:
        asyncio.run(server.start())
    assert str(server.log_path) in str(error.value) and "no-such-architecture" in str(error.value)
    with pytest.raises(ProcessLookupError):
        os.killpg(server.process.pid, 0)
