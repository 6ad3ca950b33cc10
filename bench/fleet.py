"""Several services on one Postgres: throughput of 1, 2 and 4 `housestyle serve` processes against the instant
upstream, and how soon a promotion made through one instance is served by another.

A throwaway Postgres cluster (tests.fixtures.stores) holds one store per fleet size; one instant upstream
(bench/instant_upstream.py: answers at once, loads adapters by name) stands in for vLLM, so what the figures show
is the services' own ceiling. Each fleet size runs --rounds rounds of --requests chat completions, --concurrency at a
time, spread round-robin over the instances as a load balancer without affinity would; the baseline is one instance,
measured in the same run, and the ratio is each size's median rps over the baseline's. Redaction at ingest is off in
every instance (it is a per-store background job, not on the request path). Then, with the largest fleet, --swaps
promotions are made through instance A (`POST /admin/adapters/{v}/promote`) and instance B's `GET /admin/adapters`
is polled every 5 ms until it serves the version: the seconds from A's answer to B serving it.

On a machine with fewer cores than instances, the instances share them: the throughput ratio then says what the
store and the processes cost each other, not what more hosts would add.

Run: .venv/bin/python bench/fleet.py [--instances 1 2 4] [--requests 3000] [--rounds 3] [--concurrency 32]
     [--swaps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.plugin_load import percentile  # noqa: E402 (after the path that makes bench importable)

QUESTION = "Where is my order? It was supposed to arrive on Monday."
BASE_ROOT = "instant-upstream"  # the base the instant upstream reports: what adapters must declare


@dataclass
class Instance:
    """One `housestyle serve` process of the fleet."""

    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def housestyle(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "plugin.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def start_fleet(count: int, database_url: str, upstream: str, work: Path) -> tuple[list[Instance], dict[str, str]]:
    """`count` services on one store, each with its own home; the keys every instance accepts."""
    from serving.vllm_server import free_port

    env = {**os.environ, "HOUSESTYLE_DATABASE_URL": database_url, "HOUSESTYLE_VLLM_URLS": upstream,
           "HOUSESTYLE_REDACT_AT_INGEST": "false", "HOUSESTYLE_RATE_LIMIT_PER_SECOND": "1000000",
           "HOUSESTYLE_RATE_LIMIT_BURST": "1000000", "HOUSESTYLE_HEALTH_INTERVAL_S": "1"}
    keys = {role: housestyle("keys", "create", "--role", role, env={**env, "HOUSESTYLE_HOME": str(work / "keys")})
            for role in ("agent", "admin")}
    instances = []
    for index in range(count):
        home, port = work / f"instance-{index}", free_port()
        home.mkdir(parents=True)
        process = subprocess.Popen([sys.executable, "-m", "plugin.cli", "serve", "--port", str(port)],
                                   env={**env, "HOUSESTYLE_HOME": str(home)}, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=(home / "serve.log").open("w"))
        instances.append(Instance(f"http://127.0.0.1:{port}", process))
    for instance, index in zip(instances, range(count), strict=True):
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{instance.url}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if instance.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"instance {index} did not become ready; its log: {work / f'instance-{index}'}")
            time.sleep(0.2)
    return instances, keys


async def load(urls: list[str], key: str, requests: int, concurrency: int) -> dict:
    """`requests` chat completions, `concurrency` at a time, request i to instance i mod N; rps and latencies."""
    latencies: list[float] = []
    errors = 0
    queue = list(range(requests))
    body = {"model": "gadgetcorp-assistant", "max_tokens": 16,
            "messages": [{"role": "user", "content": QUESTION}]}
    sessions = [aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {key}"},
                                      connector=aiohttp.TCPConnector(limit=concurrency),
                                      timeout=aiohttp.ClientTimeout(total=120)) for url in urls]
    try:
        async def worker() -> None:
            nonlocal errors
            while queue:
                index = queue.pop()
                started = time.perf_counter()
                async with sessions[index % len(sessions)].post("/v1/chat/completions", json=body) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                errors += response.status != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    finally:
        for session in sessions:
            await session.close()
    return {"rps": requests / wall, "latencies": latencies, "errors": errors}


def register_versions(database_url: str, count: int, work: Path) -> list[str]:
    """`count` adapter folders that pass validation (the instant upstream never reads weights), registered."""
    from core.db import session_scope
    from core.registry import new_version_id, register_adapter
    from tests.fixtures.vllm import write_manifest

    versions = []
    for index in range(count):
        folder = work / "adapters" / f"a{index}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8,
                                                                "target_modules": ["q_proj", "v_proj"]}))
        (folder / "adapter_model.safetensors").write_bytes(f"weights {index}".encode() * 64)
        write_manifest(folder)
        with session_scope(database_url) as session:
            version = new_version_id(session, f"{index:064x}")
            register_adapter(session, version=version, path=str(folder), base_model=BASE_ROOT, rank=8)
        versions.append(version)
    return versions


def swap_latency(a: str, b: str, key: str, versions: list[str]) -> tuple[list[float], list[float]]:
    """(A's promote answer seconds, seconds from A's answer to B serving the version) per promotion."""
    headers = {"Authorization": f"Bearer {key}"}
    promote_s, followed_s = [], []
    with httpx.Client(base_url=a, headers=headers, timeout=120) as on_a, \
            httpx.Client(base_url=b, headers=headers, timeout=120) as on_b:
        for version in versions:
            started = time.perf_counter()
            answer = on_a.post(f"/admin/adapters/{version}/promote", json={"reason": "bench"})
            answered = time.perf_counter()
            if answer.status_code != 200:
                raise SystemExit(f"promote {version} through A failed: {answer.status_code} {answer.text}")
            while on_b.get("/admin/adapters").json()["serving"]["live"] != version:
                if time.perf_counter() - answered > 60:
                    raise SystemExit(f"B did not serve {version} within 60 s")
                time.sleep(0.005)
            promote_s.append(answered - started)
            followed_s.append(time.perf_counter() - answered)
    return promote_s, followed_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--swaps", type=int, default=20)
    args = parser.parse_args()

    from core.db import open_store
    from serving.vllm_server import free_port
    from tests.fixtures.stores import PostgresCluster

    cluster = PostgresCluster()
    cluster.start()
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "instant_upstream.py"), str(port)],
                                stdout=subprocess.PIPE, text=True)
    upstream.stdout.readline()  # its "instant upstream on ..." line: listening
    upstream_url = f"http://127.0.0.1:{port}"
    rows, swaps = [], None
    try:
        with tempfile.TemporaryDirectory(prefix="housestyle-fleet-") as tmp:
            for count in args.instances:
                url = cluster.create_database()
                open_store(url)
                work = Path(tmp) / f"fleet-{count}"
                instances, keys = start_fleet(count, url, upstream_url, work)
                try:
                    urls = [instance.url for instance in instances]
                    asyncio.run(load(urls, keys["agent"], 200, args.concurrency))  # warm-up: connections, caches
                    results = [asyncio.run(load(urls, keys["agent"], args.requests, args.concurrency))
                               for _ in range(args.rounds)]
                    latencies = [s for result in results for s in result["latencies"]]
                    rows.append({"instances": count, "rps": [r["rps"] for r in results],
                                 "p50_ms": 1000 * percentile(latencies, 0.5),
                                 "p99_ms": 1000 * percentile(latencies, 0.99),
                                 "errors": sum(r["errors"] for r in results)})
                    print(f"{count} instance(s): rps {', '.join(f'{r:.0f}' for r in rows[-1]['rps'])}", flush=True)
                    if count == max(args.instances) and count >= 2:
                        versions = register_versions(url, args.swaps, work)
                        swaps = swap_latency(urls[0], urls[1], keys["admin"], versions)
                finally:
                    for instance in instances:
                        instance.stop()
    finally:
        upstream.kill()
        cluster.stop()

    baseline = statistics.median(rows[0]["rps"])
    print(f"\n{args.requests} requests x {args.rounds} rounds, {args.concurrency} at a time, round-robin over the "
          f"instances; {os.cpu_count()} CPUs\n")
    print("| instances | rps (median of rounds) | vs 1 instance | p50 ms | p99 ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        median = statistics.median(row["rps"])
        print(f"| {row['instances']} | {median:,.0f} | {median / baseline:.2f}x | {row['p50_ms']:.1f} | "
              f"{row['p99_ms']:.1f} | {row['errors']} |")
    if swaps:
        promote_s, followed_s = swaps
        print(f"\n{len(followed_s)} promotions through A: A answered in p50 "
              f"{1000 * percentile(promote_s, 0.5):.0f} ms; "
              f"B served the version p50 {1000 * percentile(followed_s, 0.5):.0f} ms, "
              f"p99 {1000 * percentile(followed_s, 0.99):.0f} ms, max {1000 * max(followed_s):.0f} ms after A answered")


if __name__ == "__main__":
    main()
