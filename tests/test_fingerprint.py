"""Serving the weights that passed the gate: every load, rejoin and periodic check compares what a replica answers
to a fixed probe set with the version's recorded fingerprint; a replica serving other weights under the version's
name is caught (the swap refused, or the replica taken out), counted in a metric and logged in one line."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from core.db import session_scope
from core.models import AdapterStatus
from core.registry import get_adapter, recorded_fingerprint
from core.settings import Settings
from plugin.metrics import ServiceMetrics
from serving.errors import NoHealthyReplicaError, SwapFailedError
from serving.fingerprint import LOGPROB_TOLERANCE, PROBE_MESSAGES, Fingerprint
from serving.gateway import ServingGateway
from tests.fixtures.stores import current_store
from tests.fixtures.vllm import RunningVllm, register_adapter_folder, running_gateway
from tests.test_registry_follow import StandInVllm, adapter_folder
from tests.test_serving_swap import ask, reference_answer

MISMATCH = "fingerprint mismatch"


def fingerprint(tokens: list[str], logprobs: list[float], runners_up: list[str] | None = None,
                runner_up_logprobs: list[float] | None = None) -> Fingerprint:
    """The same probe answer for every probe of the set."""
    runners_up = runners_up or ["?"] * len(tokens)
    runner_up_logprobs = runner_up_logprobs or [-9.0] * len(tokens)
    return Fingerprint(**{field: [value] * len(PROBE_MESSAGES) for field, value in (
        ("tokens", tokens), ("logprobs", logprobs), ("runners_up", runners_up),
        ("runner_up_logprobs", runner_up_logprobs))})


# token 2 is a near-tie: its runner-up y is 0.05 below it
RECORDED = fingerprint(["a", "b", "c"], [-0.5, -1.0, -2.0], ["r", "y", "s"], [-2.5, -1.05, -3.0])


@pytest.mark.parametrize(
    ("seen", "differs"),
    [
        (RECORDED, None),
        (fingerprint(["x", "b", "c"], [-0.5, -1.0, -2.0]), "token 1 is x, recorded a"),
        # the runner-up of a near-tie at its log-prob, and another text after it: rounding, not other weights
        (fingerprint(["a", "y", "z"], [-0.5, -1.02, -3.0]), None),
        (fingerprint(["a", "q", "c"], [-0.5, -1.0, -2.0]), "token 2 is q, recorded b"),
        (fingerprint(["a", "y", "c"], [-0.5, -1.05 - 2 * LOGPROB_TOLERANCE, -2.0]), "token 2 is y, recorded b"),
        (fingerprint(["a", "b", "c"], [-0.5 - 2 * LOGPROB_TOLERANCE, -1.0, -2.0]), "log-prob"),
        (fingerprint(["a", "b", "c"], [-0.5 - LOGPROB_TOLERANCE / 2, -1.0, -2.0]), None),
        (fingerprint(["a"], [-0.5]), "stopped after 1 tokens"),
    ],
    ids=["same", "other-first-token", "near-tie-runner-up", "near-tie-another-token", "near-tie-runner-up-elsewhere",
         "log-prob-beyond-tolerance", "log-prob-within-tolerance", "shorter"],
)
def test_a_fingerprint_differs_on_a_confident_token_or_log_prob_not_on_rounding(seen: Fingerprint,
                                                                               differs: str | None) -> None:
    difference = RECORDED.difference(seen)
    assert difference is None if differs is None else differs in (difference or "")


def mismatch_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if MISMATCH in record.getMessage()]


class StaleCopyStandIn(StandInVllm):
    """A host whose copy of every adapter folder holds other weights while `stale` (the stand-in answers by the
    folder it loaded)."""

    def __init__(self, *, stale: bool = True) -> None:
        super().__init__()
        self.stale = stale

    async def load(self, request):
        response = await super().load(request)
        if self.stale:
            self.loaded[self.loads[-1]] += "-another-training"
        return response


def test_replicas_that_disagree_on_a_first_load_refuse_the_swap_and_record_nothing(store_url: str, tmp_path: Path,
                                                                                    caplog) -> None:
    version = register_adapter_folder(adapter_folder(tmp_path, "a0"), Path("stand-in-base"), database_url=store_url)
    settings = Settings(home=tmp_path / "home", database_url=store_url, registry_follow_seconds=0,
                        fingerprint_interval_s=0)

    async def scenario() -> None:
        good, stale = await StandInVllm().start(), await StaleCopyStandIn().start()
        gateway = ServingGateway(settings, urls=[good.url, stale.url])
        await gateway.start()
        try:
            with pytest.raises(SwapFailedError, match=f"{stale.url} does not serve version {version}'s weights"):
                await gateway.promote(version, actor="test")
            assert gateway.status().live is None and good.loaded == {} and stale.loaded == {}
            assert dict(gateway.fingerprints.mismatches) == {(version, stale.url): 1}
            metrics = ServiceMetrics(store_url)
            metrics.watch_fingerprints(gateway.fingerprints.mismatches)
            exported = generate_latest(metrics.registry).decode()
            assert (f'housestyle_fingerprint_mismatches_total{{adapter_version="{version}",replica="{stale.url}"}} '
                    "1.0") in exported
        finally:
            await gateway.stop()
            await good.stop()
            await stale.stop()

    with caplog.at_level(logging.ERROR, logger="housestyle.serving"):
        asyncio.run(scenario())
    assert recorded_fingerprint(version, database_url=store_url) is None
    [line] = mismatch_lines(caplog)
    assert version in line and "replicas disagree" in line and "swap is refused" in line


@asynccontextmanager
async def promoted_on_a_stand_in(store_url: str, tmp_path: Path
                                 ) -> AsyncIterator[tuple[str, StaleCopyStandIn, ServingGateway]]:
    """A version promoted through a gateway in front of one stand-in replica that, for now, serves the right weights;
    no periodic rounds of its own (the test calls them), stopped after."""
    version = register_adapter_folder(adapter_folder(tmp_path, "a0"), Path("stand-in-base"), database_url=store_url)
    settings = Settings(home=tmp_path / "home", database_url=store_url, registry_follow_seconds=0,
                        fingerprint_interval_s=0, health_interval_s=3600)
    upstream = await StaleCopyStandIn(stale=False).start()
    gateway = ServingGateway(settings, urls=[upstream.url])
    await gateway.start()
    try:
        await gateway.promote(version, actor="test")
        yield version, upstream, gateway
    finally:
        await gateway.stop()
        await upstream.stop()


def test_a_lost_name_loaded_again_with_other_weights_takes_the_replica_out(store_url: str, tmp_path: Path,
                                                                          caplog) -> None:
    """The relay loads a name a replica lost (an unload from outside, a restart between health rounds) again before
    it retries the request: that load is checked too, and a replica answering unlike the fingerprint leaves."""
    async def scenario() -> str:
        async with promoted_on_a_stand_in(store_url, tmp_path) as (version, upstream, gateway):
            upstream.stale = True  # its copy of the folder is now another training's
            upstream.loaded.clear()  # and it lost the name
            with pytest.raises(NoHealthyReplicaError):
                await gateway.chat({"messages": [{"role": "user", "content": "hi"}]})
            assert not gateway.pool.replicas[0].healthy
            assert dict(gateway.fingerprints.mismatches) == {(version, upstream.url): 1}
        return version

    with caplog.at_level(logging.ERROR, logger="housestyle.serving"):
        version = asyncio.run(scenario())
    [line] = mismatch_lines(caplog)
    assert version in line and "taken out of the pool" in line


def test_the_periodic_check_takes_out_a_replica_serving_other_weights_and_it_rejoins_only_on_the_right_ones(
    store_url: str, tmp_path: Path, caplog
) -> None:
    """The periodic check and the rejoin, on a stand-in (the real-vLLM test below is the same story)."""
    async def scenario() -> str:
        async with promoted_on_a_stand_in(store_url, tmp_path) as (version, upstream, gateway):
            replica = gateway.pool.replicas[0]
            await gateway.check_fingerprints()
            assert replica.healthy and dict(gateway.fingerprints.mismatches) == {}
            name = gateway.status().vllm_names[version]
            upstream.loaded[name] = str(tmp_path / "another-adapter")  # loaded behind the service's back
            await gateway.check_fingerprints()
            assert not replica.healthy and not gateway.ready()
            assert dict(gateway.fingerprints.mismatches) == {(version, upstream.url): 1}
            upstream.stale = True  # while its copy of the folder is another training's, it stays out
            await gateway.pool.check_once()
            assert not replica.healthy
            upstream.stale = False
            await gateway.pool.check_once()
            assert replica.healthy and dict(gateway.fingerprints.mismatches) == {(version, upstream.url): 1}
            # a replica taken out for being slow still holds the right weights: it rejoins without a load (a name
            # loaded again costs vLLM a slot, vllm#54839); catches a rejoin that reloads every name it finds
            loads = len(upstream.loads)
            gateway.pool.mark_unhealthy(replica, "health check timed out")
            await gateway.pool.check_once()
            assert replica.healthy and upstream.loads[loads:] == []
        return version

    with caplog.at_level(logging.ERROR, logger="housestyle.serving"):
        version = asyncio.run(scenario())
    [line] = mismatch_lines(caplog)
    assert version in line and "taken out of the pool" in line


async def load_behind_the_back(vllm: RunningVllm, name: str, folder: Path) -> None:
    """What an operator's script or another tool could do: replace what vLLM serves under `name`."""
    async with httpx.AsyncClient(base_url=vllm.url, headers={"Authorization": f"Bearer {vllm.api_key}"}) as client:
        (await client.post("/v1/unload_lora_adapter", json={"lora_name": name})).raise_for_status()
        (await client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)})
         ).raise_for_status()


async def unload_what_it_served(gateway: ServingGateway) -> None:
    """Leave the shared vLLM as found: other tests look for their versions' ids among its names."""
    for loaded in gateway.routes.names_in_use():
        await gateway.pool.replicas[0].unload_adapter(loaded.vllm_name)


async def until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s}s"
        await asyncio.sleep(0.05)


@pytest.mark.vllm
@pytest.mark.slow
def test_a_replica_serving_another_adapter_under_the_versions_name_is_taken_out_until_it_serves_the_right_one(
    serving_settings: Settings, vllm_server: RunningVllm, lora_adapters, tmp_path: Path, caplog
) -> None:
    folder = shutil.copytree(lora_adapters["gadgetcorp"], tmp_path / "live")
    live = register_adapter_folder(folder, vllm_server.base_model)
    # no health rounds of their own: the replica rejoins when the test says, so "taken out" is observable
    settings = serving_settings.model_copy(update={"health_interval_s": 3600.0, "fingerprint_interval_s": 0.3})

    async def scenario() -> None:
        expected = await reference_answer(vllm_server, lora_adapters["gadgetcorp"])
        async with running_gateway(settings) as gateway:
            await gateway.promote(live, actor="test")
            replica = gateway.pool.replicas[0]
            assert recorded_fingerprint(live, database_url=gateway.database_url) is not None
            await asyncio.sleep(1.0)  # a few periodic rounds on the right weights: no false alarm
            assert replica.healthy and dict(gateway.fingerprints.mismatches) == {}

            await load_behind_the_back(vllm_server, gateway.status().vllm_names[live], lora_adapters["other"])
            await until(lambda: not replica.healthy, timeout_s=30)
            assert not gateway.ready()
            assert dict(gateway.fingerprints.mismatches) == {(live, replica.url): 1}

            # it rejoins once its names, loaded again from their folders, answer with their fingerprints: not while
            # the folder holds other weights (still the same mismatch: not counted again)
            shutil.move(folder, tmp_path / "aside")
            shutil.copytree(lora_adapters["other"], folder)
            await gateway.pool.check_once()
            assert not replica.healthy
            shutil.rmtree(folder)
            shutil.move(tmp_path / "aside", folder)
            await gateway.pool.check_once()
            assert replica.healthy
            assert await ask(gateway, stream=False) == (live, expected, "length")
            await asyncio.sleep(1.0)
            assert dict(gateway.fingerprints.mismatches) == {(live, replica.url): 1}
            await unload_what_it_served(gateway)

    with caplog.at_level(logging.ERROR, logger="housestyle.serving"):
        asyncio.run(scenario())
    [line] = mismatch_lines(caplog)
    assert live in line and vllm_server.url in line and "taken out of the pool" in line


@pytest.mark.vllm
@pytest.mark.slow
def test_a_rollback_to_a_folder_now_holding_other_weights_is_refused_and_the_live_version_keeps_serving(
    serving_settings: Settings, vllm_server: RunningVllm, lora_adapters, tmp_path: Path, caplog
) -> None:
    """A version's folder replaced by another training's files with a matching manifest (a stale copy synced over
    it) passes validation; only its fingerprint, recorded when it was first served, tells it apart."""
    folder = shutil.copytree(lora_adapters["gadgetcorp"], tmp_path / "kept")
    kept = register_adapter_folder(folder, vllm_server.base_model)
    live = register_adapter_folder(lora_adapters["other"], vllm_server.base_model)
    settings = serving_settings.model_copy(update={"fingerprint_interval_s": 0})

    async def scenario() -> None:
        async with running_gateway(settings) as gateway:
            await gateway.promote(kept, actor="test")
            await gateway.promote(live, actor="test")
            shutil.rmtree(folder)
            shutil.copytree(lora_adapters["retrained"], folder)
            with pytest.raises(SwapFailedError, match=f"does not serve version {kept}'s weights"):
                await gateway.rollback(actor="test")
            assert gateway.status().live == live
            assert gateway.status().replicas[0].loaded_adapters == [gateway.status().vllm_names[live]]
            assert (await ask(gateway, stream=False))[0] == live
            assert dict(gateway.fingerprints.mismatches) == {(kept, vllm_server.url): 1}
            await unload_what_it_served(gateway)

    with caplog.at_level(logging.ERROR, logger="housestyle.serving"):
        asyncio.run(scenario())
    with session_scope(current_store()) as session:
        assert get_adapter(session, live).status == AdapterStatus.LIVE
        assert get_adapter(session, kept).status == AdapterStatus.RETIRED
    [line] = mismatch_lines(caplog)
    assert kept in line and vllm_server.url in line and "swap is refused" in line
