"""Many brands on one vLLM: throughput and p50/p99 with 1, 2, 4 and 8 brands' adapters live, traffic even and skewed.

One real vLLM (CPU) serves a tiny base (HOUSESTYLE_BASE_MODEL, else a tiny random Llama built on the fly) with
--max-loras sized from the brands; each brand gets its own real PEFT LoRA adapter (random weights: as costly to
serve as a trained one), registered in its own lineage and promoted through the serving gateway, which then routes
each request by brand exactly as `housestyle serve` does. Every request generates exactly --tokens tokens. The
baseline is the single-brand run (one adapter), measured in the same run and interleaved with the others.

Goal: 8 brands >= 0.8 x the single-brand throughput (vLLM PR #11267 measured one LoRA at 0.66 x the base; Punica and
S-LoRA keep throughput nearly flat as adapters grow).

Run: .venv/bin/python bench/multi_brand.py [--requests 96] [--concurrency 8] [--tokens 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = ["My SuperWidget will not charge.", "Where is my order?", "Can I return my NanoCharger?",
             "Do you ship to Canada?", "How do I reset my UltraHub?", "We need an invoice for 30 units."]
BRAND_COUNTS = (1, 2, 4, 8)


def brand_weights(brands: int, spread: str) -> list[float]:
    """even: the same share each; skewed: Zipf-like (the first brand gets about half the traffic of 8)."""
    if spread == "even":
        return [1.0] * brands
    return [1.0 / (rank + 1) for rank in range(brands)]


async def run_load(gateway, brand_ids: list[int], spread: str, requests: int, concurrency: int, tokens: int) -> dict:
    rng = random.Random(7)
    targets = rng.choices(brand_ids, weights=brand_weights(len(brand_ids), spread), k=requests)
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while targets:
            index = len(targets)
            brand = targets.pop()
            body = {"messages": [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}], "max_tokens": tokens,
                    "ignore_eos": True, "temperature": 0}
            started = time.perf_counter()
            try:
                route, _ = await gateway.chat(body, conversation_key=f"c{index}", brand_id=brand)
                assert route.version is not None, "every brand has its adapter live"
            except Exception:  # noqa: BLE001 - counted and reported
                errors += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {"rps": requests / wall, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, "errors": errors}


def prepare(home: Path, base: Path, brands: int) -> list[int]:
    """A store with `brands` brands (the default one first), each with its own adapter registered."""
    from collector.brands import brand_fields, create_brand
    from core.db import open_store, session_scope
    from core.registry import new_version_id, register_adapter
    from core.settings import get_settings
    from tests.fixtures.vllm import make_lora_adapter

    settings = get_settings()
    open_store(settings.resolved_database_url)
    ids = [1]
    with session_scope(settings.resolved_database_url) as session:
        for index in range(2, brands + 1):
            brand = create_brand(session, f"brand-{index}", brand_fields(company_name=f"Brand {index}"),
                                 settings=settings)
            ids.append(int(brand.id))
    for brand in ids:
        folder = make_lora_adapter(base, home / "adapters" / f"brand-{brand}", seed=brand)
        with session_scope(settings.resolved_database_url) as session:
            version = new_version_id(session, f"{brand:064x}")
            register_adapter(session, version=version, path=str(folder), base_model=str(base), rank=8,
                             brand_id=brand)
    return ids


async def measure(args: argparse.Namespace, brand_ids: list[int]) -> dict[tuple[int, str], list[dict]]:
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import AdapterVersion
    from core.settings import get_settings
    from serving.gateway import ServingGateway

    settings = get_settings()
    gateway = ServingGateway(settings)
    print(f"starting vLLM with --max-loras {gateway.max_loras} for {len(brand_ids)} brands ...", flush=True)
    await gateway.start()
    try:
        with session_scope(settings.resolved_database_url) as session:
            versions = session.execute(select(AdapterVersion.version).order_by(AdapterVersion.brand_id)).scalars()
            for version in list(versions):
                await gateway.promote(version, actor="bench")
        results: dict[tuple[int, str], list[dict]] = {}
        configs = [(count, spread) for count in BRAND_COUNTS for spread in ("even", "skewed") if count <= len(brand_ids)
                   and not (count == 1 and spread == "skewed")]
        await run_load(gateway, brand_ids, "even", 2 * args.concurrency, args.concurrency, args.tokens)  # warm-up
        for round_ in range(args.rounds):  # interleaved, so drift on a shared machine hits every config alike
            for count, spread in configs:
                result = await run_load(gateway, brand_ids[:count], spread, args.requests, args.concurrency,
                                        args.tokens)
                results.setdefault((count, spread), []).append(result)
                print(f"round {round_ + 1}: {count} brand(s) {spread}: {result['rps']:.2f} req/s, "
                      f"p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, errors {result['errors']}",
                      flush=True)
        return results
    finally:
        await gateway.stop()


def report(results: dict[tuple[int, str], list[dict]]) -> None:
    def best(key: tuple[int, str]) -> dict:
        return max(results[key], key=lambda result: result["rps"])

    baseline = best((1, "even"))
    print("\n| brands | traffic | req/s | x single brand | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(results):
        row = best(key)
        errors = sum(result["errors"] for result in results[key])
        print(f"| {key[0]} | {key[1]} | {row['rps']:.2f} | {row['rps'] / baseline['rps']:.2f}x | {row['p50_ms']:.0f} "
              f"| {row['p99_ms']:.0f} | {errors} |")
    eight = [key for key in results if key[0] == max(k[0] for k in results)]
    worst = min(best(key)["rps"] / baseline["rps"] for key in eight)
    print(f"\n{eight[0][0]} brands, worst traffic shape: {worst:.2f}x the single-brand throughput (goal >= 0.8x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--brands", type=int, default=max(BRAND_COUNTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hs-multibrand-") as folder:
        home = Path(folder)
        os.environ["HOUSESTYLE_HOME"] = str(home)
        os.environ.setdefault("HOUSESTYLE_VLLM_EXTRA_ARGS", f"--max-num-seqs {max(args.concurrency, 8)}")
        from core.settings import get_settings

        get_settings.cache_clear()
        base = Path(os.environ["HOUSESTYLE_BASE_MODEL"]) if os.environ.get("HOUSESTYLE_BASE_MODEL") else None
        if base is None:
            from tests.fixtures.vllm import _build_scratch_base  # the tiny random Llama the test suite serves

            base = _build_scratch_base(home / "base")
            os.environ["HOUSESTYLE_BASE_MODEL"] = str(base)
            get_settings.cache_clear()
        brand_ids = prepare(home, base, args.brands)
        report(asyncio.run(measure(args, brand_ids)))


if __name__ == "__main__":
    main()
