"""One truth for what is served: every gateway on one store follows the registry (issue 30, item 1).

The decision (`serving.follow.decide`) is tested as a table; the following itself with two `ServingGateway`s on one
store (SQLite: the periodic re-read; Postgres: LISTEN/NOTIFY), each in front of its own stand-in vLLM that loads and
unloads adapters by name and answers at once (real vLLM is too heavy for this: `tests/test_serving_swap.py` covers
the swap protocol against it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest
from aiohttp import web

from core.settings import Settings
from serving.follow import Serving, Step, Wanted, decide
from serving.gateway import ServingGateway
from serving.routing import LoadedVersion, RoutingTable
from tests.fixtures.vllm import register_adapter_folder, write_manifest

# ---- the decision, as a table -----------------------------------------------------------------------------------

P = "/adapters/"
CASES = [
    # what the registry says, what the table serves -> the steps
    (Wanted(), Serving(), []),
    (Wanted(live="v1", live_path=P + "v1"), Serving(live="v1"), []),
    (Wanted(live="v1", live_path=P + "v1"), Serving(), [Step("promote", "v1", path=P + "v1")]),
    (Wanted(live="v2", live_path=P + "v2"), Serving(live="v1"), [Step("promote", "v2", path=P + "v2")]),
    (Wanted(live="v1", live_path=P + "v1", live_via="rollback"), Serving(live="v2"),
     [Step("rollback", "v1", path=P + "v1")]),
    (Wanted(), Serving(live="v1"), [Step("rollback", None)]),
    (Wanted(live="v1", canary="v2", canary_path=P + "v2", canary_share=0.3), Serving(live="v1"),
     [Step("canary", "v2", share=0.3, path=P + "v2")]),
    (Wanted(live="v1", canary="v2", canary_share=0.3), Serving(live="v1", canary="v2", canary_share=0.3), []),
    (Wanted(live="v1", canary="v2", canary_path=P + "v2", canary_share=0.5),
     Serving(live="v1", canary="v2", canary_share=0.3), [Step("canary", "v2", share=0.5, path=P + "v2")]),
    (Wanted(live="v1", canary="v3", canary_path=P + "v3", canary_share=0.3),
     Serving(live="v1", canary="v2", canary_share=0.3), [Step("canary", "v3", share=0.3, path=P + "v3")]),
    (Wanted(live="v1"), Serving(live="v1", canary="v2", canary_share=0.3), [Step("end-canary", "v2")]),
    # the canary was promoted: flip it to live, nothing left to end
    (Wanted(live="v2", live_path=P + "v2"), Serving(live="v1", canary="v2", canary_share=0.3),
     [Step("promote", "v2", path=P + "v2")]),
    # promoted and a new canary started since the last read
    (Wanted(live="v2", live_path=P + "v2", canary="v3", canary_path=P + "v3", canary_share=0.1),
     Serving(live="v1", canary="v2", canary_share=0.3),
     [Step("promote", "v2", path=P + "v2"), Step("canary", "v3", share=0.1, path=P + "v3")]),
    # another version promoted while a canary ran and the canary ended
    (Wanted(live="v3", live_path=P + "v3"), Serving(live="v1", canary="v2", canary_share=0.3),
     [Step("promote", "v3", path=P + "v3"), Step("end-canary", "v2")]),
]


@pytest.mark.parametrize(("wanted", "serving", "steps"), CASES)
def test_the_steps_make_the_table_serve_what_the_registry_says(wanted: Wanted, serving: Serving,
                                                               steps: list[Step]) -> None:
    assert decide(wanted, serving) == steps


def test_the_canary_split_is_the_same_on_every_instance() -> None:
    """Two tables (two instances) with the same canary and share send each conversation to the same version: the
    split is a hash of the conversation key, not a random draw."""
    tables = [RoutingTable("public", "base") for _ in range(2)]
    for index, table in enumerate(tables):
        table.live = LoadedVersion(version="v1", vllm_name=f"hs-a-v1-{index}", path="/a")
        table.canary = LoadedVersion(version="v2", vllm_name=f"hs-a-v2-{index}", path="/b")
        table.canary_share = 0.3
    keys = [f"conversation-{n}" for n in range(2000)]
    first = [tables[0].resolve(key).version for key in keys]
    assert first == [tables[1].resolve(key).version for key in keys]
    assert 0.25 < first.count("v2") / len(keys) < 0.35


# ---- two gateways on one store ------------------------------------------------------------------------------------


class StandInVllm:
    """A vLLM stand-in: /health, /v1/models (the base and the adapters loaded), runtime LoRA load/unload, and
    completions that answer at once naming the model they were asked for (404 for an adapter not loaded); asked
    for log-probs (the fingerprint probe), tokens that depend on the folder loaded, as weights would."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.loads: list[str] = []
        self.unloads: list[str] = []
        app = web.Application()
        app.add_routes([web.get("/health", self.health), web.get("/v1/models", self.models),
                        web.post("/v1/load_lora_adapter", self.load), web.post("/v1/unload_lora_adapter", self.unload),
                        web.post("/v1/completions", self.complete), web.post("/v1/chat/completions", self.complete)])
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        self.url = ""

    async def start(self) -> StandInVllm:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # the port the OS picked
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": "base", "object": "model", "root": "stand-in-base", "parent": None, "max_model_len": 2048}]
        data += [{"id": name, "object": "model", "root": path, "parent": "base"} for name, path in self.loaded.items()]
        return web.json_response({"object": "list", "data": data})

    async def load(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["lora_name"] in self.loaded:  # as vLLM answers a second load of a name without load_inplace
            return web.json_response({"error": {"message": f"The lora adapter '{body['lora_name']}' has already "
                                                           "been loaded."}}, status=400)
        self.loaded[body["lora_name"]] = body["lora_path"]
        self.loads.append(body["lora_name"])
        return web.Response(text="ok")

    async def unload(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.loaded.pop(body["lora_name"], None) is None:
            return web.json_response({"error": {"message": "not loaded"}}, status=404)
        self.unloads.append(body["lora_name"])
        return web.Response(text="ok")

    async def complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = body.get("model")
        if model != "base" and model not in self.loaded:
            return web.json_response({"error": {"message": f"model {model} does not exist"}}, status=404)
        reply = {"role": "assistant", "content": f"from {model}"}
        choice = {"index": 0, "message": reply, "text": reply["content"], "finish_reason": "stop"}
        choices = [choice]
        if body.get("logprobs"):  # one answer per prompt, its tokens a function of the folder loaded
            weights = hashlib.sha256(self.loaded.get(model, "base").encode()).digest()
            choices = [{**choice, "index": index, "logprobs": {
                "tokens": [f"token_id:{byte}" for byte in weights[index:index + body["max_tokens"]]],
                "token_logprobs": [-1.0] * body["max_tokens"],
                "top_logprobs": [{f"token_id:{byte}": -1.0, "token_id:0": -3.0}
                                 for byte in weights[index:index + body["max_tokens"]]]}}
                for index in range(len(body["prompt"]))]
        return web.json_response({"id": "x", "object": "chat.completion", "created": 0, "model": model,
                                  "choices": choices,
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def adapter_folder(root: Path, name: str) -> Path:
    """A folder that passes validation (config, weights file, manifest); the stand-in never reads the weights."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}))
    (folder / "adapter_model.safetensors").write_bytes(name.encode() * 64)
    write_manifest(folder)
    return folder


async def until(condition, timeout_s: float) -> float:
    """Seconds until `condition()` holds (polled every millisecond); fails after `timeout_s`."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout_s:
            raise AssertionError(f"not followed within {timeout_s}s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


def same_tables(a: ServingGateway, b: ServingGateway) -> bool:
    ta, tb = a.routes.table(), b.routes.table()
    return ((ta.live and ta.live.version) == (tb.live and tb.live.version)
            and (ta.canary and ta.canary.version) == (tb.canary and tb.canary.version)
            and (ta.canary_share if ta.canary else 0.0) == (tb.canary_share if tb.canary else 0.0))


@pytest.mark.slow
def test_a_swap_made_through_one_gateway_is_served_by_the_other_within_the_bound(store_url: str, tmp_path: Path):
    follow_s = 0.5
    # SQLite: the periodic re-read alone; Postgres: NOTIFY wakes the follower at once, the re-read is the safety net
    bound_s = 0.5 if store_url.startswith("postgres") else follow_s + 1.0
    versions = [register_adapter_folder(adapter_folder(tmp_path, f"a{n}"), Path("stand-in-base"),
                                        database_url=store_url) for n in range(3)]
    settings = Settings(home=tmp_path / "home", database_url=store_url, registry_follow_seconds=follow_s,
                        health_interval_s=0.2)
    keys = [f"conversation-{n}" for n in range(300)]
    timings: dict[str, float] = {}

    async def scenario() -> None:
        upstreams = [await StandInVllm().start() for _ in range(3)]
        a = ServingGateway(settings, urls=[upstreams[0].url])
        b = ServingGateway(settings, urls=[upstreams[1].url])
        await a.start()
        await b.start()
        try:
            async def step(name: str, swap) -> None:
                await swap
                timings[name] = await until(lambda: same_tables(a, b), bound_s)
                # then B drains and unloads the names it no longer serves: its replica holds exactly its table's
                await until(lambda: set(upstreams[1].loaded) == {v.vllm_name for v in b.routes.names_in_use()}, 2.0)
                for key in keys[:20]:
                    route, body = await b.chat({"messages": [{"role": "user", "content": "hi"}]},
                                               conversation_key=key)
                    assert route.version == a.resolve(key).version
                    assert body["choices"][0]["message"]["content"] == f"from {route.vllm_model}"

            await step("promote", a.promote(versions[0], actor="ana"))
            await step("canary 30%", a.canary(versions[1], 0.3, actor="ana"))
            assert [a.resolve(key).version for key in keys] == [b.resolve(key).version for key in keys]
            assert 0.15 < sum(b.resolve(key).canary for key in keys) / len(keys) < 0.45
            await step("canary share 50%", a.canary(versions[1], 0.5, actor="ana"))
            await step("promote the canary", a.promote(versions[1], actor="ana"))
            await step("rollback", a.rollback(actor="ana", reason="complaints"))
            assert b.routes.table().live.version == versions[0]
            await step("canary", a.canary(versions[2], 0.2, actor="ana"))
            await step("end canary", a.canary(versions[2], 0.0, actor="ana"))
            # B never reused a vLLM name, and wrote nothing to the registry (A's actions are all there is)
            assert len(set(upstreams[1].loads)) == len(upstreams[1].loads)
            # an instance that joins late serves exactly the registry's versions
            c = ServingGateway(settings, urls=[upstreams[2].url])
            await c.start()
            try:
                assert same_tables(a, c)
            finally:
                await c.stop()
        finally:
            await b.stop()
            await a.stop()
            for upstream in upstreams:
                await upstream.stop()

    asyncio.run(scenario())
    print("\nfollow time (" + store_url.split(":")[0] + "): "
          + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in timings.items()))


def test_following_is_off_at_zero(store_url: str, tmp_path: Path):
    version = register_adapter_folder(adapter_folder(tmp_path, "a0"), Path("stand-in-base"), database_url=store_url)
    settings = Settings(home=tmp_path / "home", database_url=store_url, registry_follow_seconds=0)

    async def scenario() -> None:
        upstreams = [await StandInVllm().start() for _ in range(2)]
        a = ServingGateway(settings, urls=[upstreams[0].url])
        b = ServingGateway(settings, urls=[upstreams[1].url])
        await a.start()
        await b.start()
        try:
            await a.promote(version)
            await asyncio.sleep(0.3)
            assert b.routes.table().live is None
            assert b.follower.rounds == 0
            await b.follower.follow_once()  # what a round does when it runs
            assert b.routes.table().live.version == version
        finally:
            await b.stop()
            await a.stop()
            for upstream in upstreams:
                await upstream.stop()

    asyncio.run(scenario())
