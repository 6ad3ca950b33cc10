"""Hot-swapping adapter versions on a real vLLM: no failed request, every reply attributable, rollback, canary."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.db import open_store, session_scope
from core.models import AdapterStatus
from core.registry import get_adapter, history
from core.settings import Settings
from serving.errors import AdapterRejectedError, SwapFailedError
from tests.fixtures.stores import current_store
from tests.fixtures.vllm import RunningVllm, register_adapter_folder, running_gateway, write_manifest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# ignore_eos: every answer is exactly max_tokens long, so "complete" is checkable whatever the model says
QUESTION = {"messages": [{"role": "user", "content": "Where is my order?"}], "max_tokens": 8, "temperature": 0,
            "ignore_eos": True}


async def reference_answer(vllm: RunningVllm, folder: Path | None) -> str:
    """What vLLM itself answers with this adapter (or the base), loaded under a throwaway name."""
    async with httpx.AsyncClient(base_url=vllm.url, headers={"Authorization": f"Bearer {vllm.api_key}"}) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        name = None
        if folder is not None:
            name = f"reference-{secrets.token_hex(4)}"
            load = await client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)})
            load.raise_for_status()
            model = name
        answer = (await client.post("/v1/chat/completions", json={**QUESTION, "model": model}, timeout=120)).json()
        if name:
            await client.post("/v1/unload_lora_adapter", json={"lora_name": name})
        return answer["choices"][0]["message"]["content"]


async def ask(gateway, *, stream: bool, key: str | None = None) -> tuple[str | None, str, str | None]:
    """(version, text, finish_reason) of one chat through the gateway; streams are read to the end."""
    if not stream:
        route, body = await gateway.chat(QUESTION, conversation_key=key)
        assert body["model"] == "gadgetcorp-assistant"
        assert body["system_fingerprint"] == f"housestyle:{route.version or 'base'}"
        choice = body["choices"][0]
        return route.version, choice["message"]["content"], choice["finish_reason"]
    route, chunks = await gateway.stream_chat(QUESTION, conversation_key=key)
    text, finish = "", None
    async for chunk in chunks:
        assert chunk["model"] == "gadgetcorp-assistant"
        assert chunk["system_fingerprint"] == f"housestyle:{route.version or 'base'}"
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
            finish = choice.get("finish_reason") or finish
    return route.version, text, finish


def test_promoted_adapter_answers_behind_the_public_name(serving_settings: Settings, vllm_server, lora_adapters):
    version = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)

    async def scenario():
        expected = {None: await reference_answer(vllm_server, None), version: await reference_answer(vllm_server, lora_adapters["gadgetcorp"])}
        assert expected[None] != expected[version], "the test adapter must behave unlike the base"
        async with running_gateway(serving_settings) as gateway:
            assert await ask(gateway, stream=False) == (None, expected[None], "length")
            result = await gateway.promote(version, actor="ana", reason="eval passed")
            assert result.previous is None and result.replicas == [vllm_server.url]
            assert await ask(gateway, stream=False) == (version, expected[version], "length")
            assert await ask(gateway, stream=True) == (version, expected[version], "length")
            status = gateway.status()
            assert status.live == version and status.replicas[0].loaded_adapters == [status.vllm_names[version]]

    asyncio.run(scenario())
    with session_scope(current_store()) as session:
        assert get_adapter(session, version).status == AdapterStatus.LIVE
        promote = history(session, version)[0]
        assert (promote.action, promote.actor, promote.reason) == ("promote", "ana", "eval passed")


@dataclass
class Reply:
    version: str | None
    text: str
    finish: str | None
    after_swap: int  # how many swaps had completed when the request was sent


def test_swaps_under_concurrent_load_fail_no_request(serving_settings: Settings, vllm_server, lora_adapters):
    a = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)
    b = register_adapter_folder(lora_adapters["other"], vllm_server.base_model)

    async def scenario():
        expected = {a: await reference_answer(vllm_server, lora_adapters["gadgetcorp"]),
                    b: await reference_answer(vllm_server, lora_adapters["other"])}
        assert expected[a] != expected[b], "the two adapters must answer differently"
        replies: list[Reply] = []
        failures: list[str] = []
        swaps_done = 0
        stop = asyncio.Event()

        async def client(index: int) -> None:
            turn = 0
            while not stop.is_set():
                sent_after = swaps_done
                try:
                    version, text, finish = await ask(gateway, stream=index % 2 == 0, key=f"client{index}-{turn}")
                except Exception as exc:  # noqa: BLE001 - every failure is collected and reported
                    failures.append(repr(exc))
                else:
                    replies.append(Reply(version, text, finish, sent_after))
                turn += 1

        async def until_replies(count: int) -> None:
            target = len(replies) + count
            while len(replies) < target and not failures:
                await asyncio.sleep(0.02)

        async with running_gateway(serving_settings) as gateway:
            await gateway.promote(a, actor="test")
            clients = [asyncio.create_task(client(index)) for index in range(16)]
            plan = [("promote", b), ("promote", a), ("promote", b), ("rollback", None)]
            for action, version in plan:
                await until_replies(24)
                if action == "promote":
                    await gateway.promote(version, actor="test", reason="load test")
                else:
                    assert (await gateway.rollback(actor="test", reason="load test")).version == a
                swaps_done += 1
            await until_replies(24)
            stop.set()
            await asyncio.gather(*clients)
            assert gateway.status().in_flight == {}
            loaded = gateway.status().replicas[0].loaded_adapters
            assert loaded == [gateway.status().vllm_names[a]], "retired names must be unloaded"

        assert failures == []
        live_after = [a, b, a, b, a]  # live version once each swap of the plan had completed
        for reply in replies:
            assert reply.finish == "length", reply
            assert reply.text == expected[reply.version], f"reply not attributable to {reply.version}: {reply}"
            # a request sent after a swap completed never sees an older version
            assert reply.version == live_after[reply.after_swap] or reply.after_swap < len(plan) and \
                reply.version == live_after[reply.after_swap + 1], reply
        for swap, version in enumerate(live_after):
            assert any(r.after_swap == swap and r.version == version for r in replies), f"no reply from {version}"

    asyncio.run(scenario())


def test_retrained_version_serves_its_new_weights(serving_settings: Settings, vllm_server, lora_adapters):
    """The stale-weights trap: a retrained adapter is a new folder and a new vLLM name, so its weights are served."""
    old = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)
    retrained = register_adapter_folder(lora_adapters["retrained"], vllm_server.base_model)

    async def scenario():
        expected_old = await reference_answer(vllm_server, lora_adapters["gadgetcorp"])
        expected_new = await reference_answer(vllm_server, lora_adapters["retrained"])
        assert expected_old != expected_new
        async with running_gateway(serving_settings) as gateway:
            await gateway.promote(old, actor="test")
            old_name = gateway.status().vllm_names[old]
            await gateway.promote(retrained, actor="test", reason="retrained on new reviews")
            assert gateway.status().vllm_names[retrained] != old_name
            assert await ask(gateway, stream=False) == (retrained, expected_new, "length")
            # and back again: the old folder is still there and is loaded under yet another fresh name
            await gateway.rollback(actor="test")
            assert gateway.status().vllm_names[old] != old_name
            assert await ask(gateway, stream=True) == (old, expected_old, "length")

    asyncio.run(scenario())


def _copy_adapter(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def test_bad_adapters_are_refused_and_the_live_version_keeps_serving(
    serving_settings: Settings, vllm_server, lora_adapters, tmp_path: Path
):
    from tests.fixtures.vllm import make_lora_adapter

    live = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)
    corrupt = _copy_adapter(lora_adapters["other"], tmp_path / "corrupt")
    weights = bytearray((corrupt / "adapter_model.safetensors").read_bytes())
    weights[-8:] = b"\x00" * 8
    (corrupt / "adapter_model.safetensors").write_bytes(bytes(weights))
    other_base = _copy_adapter(lora_adapters["other"], tmp_path / "other-base")
    config = json.loads((other_base / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.2-1B-Instruct"
    (other_base / "adapter_config.json").write_text(json.dumps(config))
    write_manifest(other_base)  # a consistent folder: only the base is wrong
    over_rank = make_lora_adapter(vllm_server.base_model, tmp_path / "rank32", seed=4, rank=32)
    refused = {
        "checksum mismatch": register_adapter_folder(corrupt, vllm_server.base_model),
        "was trained on meta-llama/Llama-3.2-1B-Instruct": register_adapter_folder(other_base, vllm_server.base_model),
        "rank 32 above the served max_lora_rank 16": register_adapter_folder(over_rank, vllm_server.base_model, rank=32),
    }

    async def scenario():
        expected = await reference_answer(vllm_server, lora_adapters["gadgetcorp"])
        async with running_gateway(serving_settings) as gateway:
            await gateway.promote(live, actor="test")
            for reason, version in refused.items():
                with pytest.raises(AdapterRejectedError, match=reason):
                    await gateway.promote(version, actor="test")
                with pytest.raises(AdapterRejectedError, match=reason):
                    await gateway.canary(version, 0.5, actor="test")
                assert gateway.status().live == live
                assert gateway.status().replicas[0].loaded_adapters == [gateway.status().vllm_names[live]]
                assert await ask(gateway, stream=False) == (live, expected, "length")

    asyncio.run(scenario())
    with session_scope(current_store()) as session:
        assert get_adapter(session, live).status == AdapterStatus.LIVE
        for reason, version in refused.items():
            assert get_adapter(session, version).status == AdapterStatus.REJECTED
            assert reason in history(session, version)[0].reason


def test_a_load_failing_on_one_replica_is_undone_everywhere(serving_settings: Settings, vllm_server, lora_adapters):
    """Two routes to the same server: the second load of the new name fails (vLLM 400), so the swap is undone."""
    live = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)
    candidate = register_adapter_folder(lora_adapters["other"], vllm_server.base_model)

    async def with_live_first():
        async with running_gateway(serving_settings) as gateway:
            await gateway.promote(live, actor="test")
        same_server_twice = [vllm_server.url, vllm_server.url + "/"]
        async with running_gateway(serving_settings, urls=same_server_twice) as gateway:
            with pytest.raises(SwapFailedError, match="nothing changed"):
                await gateway.promote(candidate, actor="test")
            assert gateway.status().live == live
            names = [model.id for model in await gateway.pool.replicas[0].list_models()]
            assert not any(candidate in name for name in names), names
            assert (await ask(gateway, stream=False))[0] == live

    asyncio.run(with_live_first())
    with session_scope(current_store()) as session:
        assert get_adapter(session, candidate).status == AdapterStatus.CANDIDATE


def test_canary_serves_a_sticky_share_of_new_conversations(serving_settings: Settings, vllm_server, lora_adapters):
    live = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)
    candidate = register_adapter_folder(lora_adapters["other"], vllm_server.base_model)

    async def scenario():
        expected = {live: await reference_answer(vllm_server, lora_adapters["gadgetcorp"]),
                    candidate: await reference_answer(vllm_server, lora_adapters["other"])}
        async with running_gateway(serving_settings) as gateway:
            await gateway.promote(live, actor="test")
            await gateway.canary(candidate, 0.3, actor="ana", reason="try on 30%")
            keys = [f"conversation-{n}" for n in range(200)]
            first = {key: gateway.resolve(key).version for key in keys}
            assert {key: gateway.resolve(key).version for key in keys} == first, "a conversation keeps its version"
            share = sum(version == candidate for version in first.values()) / len(keys)
            assert 0.2 < share < 0.4
            for key in [k for k in keys if first[k] == candidate][:3] + [k for k in keys if first[k] == live][:3]:
                version, text, _ = await ask(gateway, stream=True, key=key)
                assert (version, text) == (first[key], expected[first[key]])
            # promoting the canary reuses its loaded name: the flip needs no new load
            canary_name = gateway.status().vllm_names[candidate]
            await gateway.promote(candidate, actor="ana", reason="canary looked good")
            status = gateway.status()
            assert (status.live, status.canary, status.vllm_names[candidate]) == (candidate, None, canary_name)
            assert {gateway.resolve(key).version for key in keys} == {candidate}

    asyncio.run(scenario())
    with session_scope(current_store()) as session:
        actions = [(event.action, event.actor) for event in reversed(history(session, candidate))]
        assert actions == [("register", "trainer"), ("canary", "ana"), ("promote", "ana")]
        assert get_adapter(session, live).status == AdapterStatus.RETIRED


def test_a_dead_replica_is_taken_out_and_requests_still_succeed(serving_settings: Settings, vllm_server, lora_adapters):
    from tests.fixtures.stores import free_port

    live = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)
    dead = f"http://127.0.0.1:{free_port()}"

    async def scenario():
        async with running_gateway(serving_settings, urls=[dead, vllm_server.url]) as gateway:
            await gateway.promote(live, actor="test")
            replies = await asyncio.gather(*(ask(gateway, stream=n % 2 == 0) for n in range(8)))
            assert {version for version, _, _ in replies} == {live}
            health = {replica.url: replica.healthy for replica in gateway.status().replicas}
            assert health == {dead: False, vllm_server.url: True} and gateway.ready()

    asyncio.run(scenario())


def test_services_on_other_stores_share_a_vllm_and_a_lost_adapter_is_loaded_again(
    serving_settings: Settings, vllm_server, lora_adapters, tmp_path: Path
):
    """Another service (its own store) joining the same vLLM leaves our adapter alone; one unloaded behind the
    gateway's back (an operator, a restart the health check missed) is loaded again and the request still succeeds."""
    ours = register_adapter_folder(lora_adapters["gadgetcorp"], vllm_server.base_model)
    other_store = open_store(f"sqlite:///{tmp_path / 'other-service.db'}")
    theirs = register_adapter_folder(lora_adapters["other"], vllm_server.base_model, database_url=other_store)

    async def scenario():
        async with running_gateway(serving_settings) as gateway:
            await gateway.promote(ours, actor="test")
            our_name = gateway.status().vllm_names[ours]
            async with running_gateway(serving_settings, database_url=other_store) as neighbour:
                await neighbour.promote(theirs, actor="test")
                listed = {model.id for model in await gateway.pool.replicas[0].list_models()}
                assert {our_name, neighbour.status().vllm_names[theirs]} <= listed
                assert (await ask(neighbour, stream=False))[0] == theirs
            assert (await ask(gateway, stream=False))[0] == ours

            await gateway.pool.replicas[0].unload_adapter(our_name)  # behind the routing table's back
            replies = await asyncio.gather(*(ask(gateway, stream=n % 2 == 0) for n in range(4)))
            assert {version for version, _, finish in replies} == {ours}
            assert all(finish == "length" for _, _, finish in replies)
            assert gateway.ready() and gateway.status().replicas[0].healthy

    asyncio.run(scenario())


def test_no_healthy_replica_is_a_clear_error(housestyle_home: Path):
    from core.settings import get_settings
    from serving.errors import NoHealthyReplicaError
    from serving.gateway import ServingGateway
    from tests.fixtures.stores import free_port

    gateway = ServingGateway(get_settings(), urls=[f"http://127.0.0.1:{free_port()}"])
    with pytest.raises(NoHealthyReplicaError, match="HOUSESTYLE_VLLM_URLS"):
        asyncio.run(gateway.start())
    assert not gateway.ready()
