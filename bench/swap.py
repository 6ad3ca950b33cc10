"""Adapter swap time: HouseStyle's full promote protocol on one replica vs vLLM's raw /v1/load_lora_adapter.

Our protocol = validate (sha256 of every adapter file) + load under a fresh name + /v1/models check + fingerprint
probe (serving/fingerprint) + registry update + atomic flip + drain of the old version's in-flight requests + unload.
The baseline, measured in the same run on the same server, is the bare load call. Then the same swaps run under
continuous load (16 clients, half streaming) to count failed requests (target: zero).

Run: .venv/bin/python bench/swap.py [--base PATH] [--swaps 8]
     (no --base: HOUSESTYLE_BASE_MODEL or HOME/models/base if present, else a tiny random Llama built here)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = {"messages": [{"role": "user", "content": "Where is my order?"}], "max_tokens": 8, "temperature": 0}


def pick_base(explicit: str | None, scratch: Path) -> Path:
    from core.settings import Settings

    if explicit:
        return Path(explicit).resolve()
    configured = Path(Settings().resolved_base_model)  # the user's settings, read before prepare() points HOME away
    if configured.is_dir():
        return configured
    from tests.fixtures.vllm import _build_scratch_base

    print("building a tiny random base model for the benchmark", flush=True)
    return _build_scratch_base(scratch / "base")


def prepare(root: Path, base: Path, count: int) -> tuple[object, list[Path]]:
    """Settings for a private HOME in `root`, and `count` distinct adapters on `base`."""
    from core.settings import Settings, get_settings
    from tests.fixtures.vllm import make_lora_adapter

    # the benchmark's registry lives in its own HOME, never in the user's
    os.environ["HOUSESTYLE_HOME"] = str(root / "home")
    os.environ.pop("HOUSESTYLE_DATABASE_URL", None)
    get_settings.cache_clear()
    settings = Settings(home=root / "home", base_model=str(base), max_lora_rank=16, max_loras=4,
                        vllm_extra_args="--max-num-seqs 32", health_interval_s=1.0)
    adapters = [make_lora_adapter(base, root / f"adapter-{n}", seed=100 + n) for n in range(count)]
    return settings, adapters


async def start_server(settings):
    from serving.vllm_server import VllmServer

    server = VllmServer(settings, api_key=secrets.token_hex(16))
    started = time.perf_counter()
    await server.start()
    print(f"vLLM up on {server.url} in {time.perf_counter() - started:.1f}s", flush=True)
    return server


async def raw_load_ms(server, adapters: list[Path]) -> list[float]:
    import httpx

    times = []
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"},
                                 timeout=120) as client:
        for folder in adapters:
            name = f"raw-{secrets.token_hex(4)}"
            started = time.perf_counter()
            response = await client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)})
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            await client.post("/v1/unload_lora_adapter", json={"lora_name": name})
    return times


async def client_loop(gateway, index: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            if index % 2:
                _, body = await gateway.chat(QUESTION, conversation_key=f"c{index}")
                assert body["choices"][0]["finish_reason"]
            else:
                _, chunks = await gateway.stream_chat(QUESTION, conversation_key=f"c{index}")
                finish = None
                async for chunk in chunks:
                    finish = chunk["choices"][0].get("finish_reason") or finish
                assert finish
            counts["ok"] += 1
        except Exception as exc:  # noqa: BLE001 - a benchmark counts failures instead of stopping
            counts["failed"] += 1
            counts.setdefault("first_error", repr(exc))


async def main(base_arg: str | None, swaps: int) -> None:
    from serving.gateway import ServingGateway
    from tests.fixtures.vllm import register_adapter_folder

    with tempfile.TemporaryDirectory(prefix="housestyle-bench-swap-") as scratch:
        root = Path(scratch)
        base = pick_base(base_arg, root)
        settings, adapters = prepare(root, base, swaps)
        versions = [register_adapter_folder(folder, base) for folder in adapters]
        server = await start_server(settings)
        try:
            raw = await raw_load_ms(server, adapters)
            gateway = ServingGateway(settings.model_copy(update={"vllm_urls": server.url, "vllm_api_key": server.api_key}))
            await gateway.start()
            idle = []
            for version in versions:
                idle.append((await gateway.promote(version, actor="bench")).total_ms)
            # under load: the same versions again (fresh vLLM names each time), 16 clients running throughout
            counts = {"ok": 0, "failed": 0}
            stop = asyncio.Event()
            clients = [asyncio.create_task(client_loop(gateway, n, stop, counts)) for n in range(16)]
            await asyncio.sleep(2)
            drained, flips = [], []
            for version in versions[1:] + versions[:1]:
                result = await gateway.promote(version, actor="bench")
                drained.append(result.total_ms)
                flips.append(result.flip_ms)
                await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*clients)
            await gateway.stop()
        finally:
            await server.stop()

    raw_p50, idle_p50 = statistics.median(raw), statistics.median(idle)
    print(f"raw /v1/load_lora_adapter          p50 {raw_p50:8.1f} ms  (n={len(raw)})")
    print(f"promote, idle (full protocol)      p50 {idle_p50:8.1f} ms  -> +{idle_p50 - raw_p50:.1f} ms over raw, "
          f"ratio {idle_p50 / raw_p50:.2f}x  (target <= raw + 100 ms: {'MET' if idle_p50 <= raw_p50 + 100 else 'MISSED'})")
    print(f"promote under load: until flip     p50 {statistics.median(flips):8.1f} ms; "
          f"until old version drained+unloaded p50 {statistics.median(drained):.1f} ms")
    print(f"requests during swaps under load: {counts['ok']} ok, {counts['failed']} failed"
          + (f" (first: {counts['first_error']})" if counts["failed"] else ""))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model folder vLLM serves")
    parser.add_argument("--swaps", type=int, default=8, help="adapters to swap through")
    args = parser.parse_args()
    asyncio.run(main(args.base, args.swaps))
