"""Gateway overhead: throughput and p50 latency through ServingGateway vs straight to vLLM, same prompts, same run.

Both paths send the same non-streaming chat requests (a live LoRA adapter, greedy, 16 tokens) from 8 concurrent
clients to the same vLLM; the rounds alternate direct / gateway so drift on a shared machine hits both alike.
Targets: gateway throughput >= 0.95 of direct, added p50 latency <= 2 ms.

Run: .venv/bin/python bench/serving_overhead.py [--base PATH] [--requests 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from swap import pick_base, prepare, start_server

PROMPTS = [f"Hello, my order GC-{10000 + n} has not arrived. What can I do?" for n in range(50)]
CONCURRENCY = 8


def request(n: int) -> dict:
    return {"messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}], "max_tokens": 16, "temperature": 0,
            "ignore_eos": True}


async def run_round(send, total: int) -> tuple[float, list[float]]:
    """(requests per second, per-request latencies in ms) for `total` requests from CONCURRENCY clients."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def client() -> None:
        for n in counter:
            started = time.perf_counter()
            await send(request(n))
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return total / (time.perf_counter() - started), latencies


async def main(base_arg: str | None, total: int, rounds: int) -> None:
    import httpx

    from serving.gateway import ServingGateway
    from tests.fixtures.vllm import register_adapter_folder

    with tempfile.TemporaryDirectory(prefix="housestyle-bench-overhead-") as scratch:
        root = Path(scratch)
        base = pick_base(base_arg, root)
        settings, adapters = prepare(root, base, 1)
        version = register_adapter_folder(adapters[0], base)
        server = await start_server(settings)
        try:
            gateway = ServingGateway(settings.model_copy(update={"vllm_urls": server.url, "vllm_api_key": server.api_key}))
            await gateway.start()
            await gateway.promote(version, actor="bench")
            vllm_name = gateway.status().vllm_names[version]
            direct = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"},
                                       timeout=120, limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))

            async def send_direct(body: dict) -> None:
                response = await direct.post("/v1/chat/completions", json={**body, "model": vllm_name})
                response.raise_for_status()
                response.json()

            async def send_gateway(body: dict) -> None:
                await gateway.chat(body, conversation_key="bench")

            await run_round(send_direct, 32)  # warm-up both paths
            await run_round(send_gateway, 32)
            results = {"direct": ([], []), "gateway": ([], [])}
            for _ in range(rounds):
                for name, send in (("direct", send_direct), ("gateway", send_gateway)):
                    throughput, latencies = await run_round(send, total)
                    results[name][0].append(throughput)
                    results[name][1].extend(latencies)
            await direct.aclose()
            await gateway.stop()
        finally:
            await server.stop()

    summary = {name: (statistics.mean(rates), statistics.median(lat)) for name, (rates, lat) in results.items()}
    for name, (rate, p50) in summary.items():
        print(f"{name:8s} {rate:7.2f} req/s   p50 {p50:8.2f} ms   ({rounds} rounds x {total} requests, {CONCURRENCY} clients)")
    ratio = summary["gateway"][0] / summary["direct"][0]
    added = summary["gateway"][1] - summary["direct"][1]
    print(f"gateway/direct throughput ratio {ratio:.3f} (target >= 0.95: {'MET' if ratio >= 0.95 else 'MISSED'}); "
          f"added p50 {added:+.2f} ms (target <= 2 ms: {'MET' if added <= 2 else 'MISSED'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model folder vLLM serves")
    parser.add_argument("--requests", type=int, default=200, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/gateway rounds")
    args = parser.parse_args()
    asyncio.run(main(args.base, args.requests, args.rounds))
