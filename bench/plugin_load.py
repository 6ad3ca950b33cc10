"""Plugin overhead under load: requests/s and p50/p99 through `housestyle serve` vs straight to vLLM, same prompts.

One real vLLM (CPU) serves a tiny base model (HOUSESTYLE_BASE_MODEL, else a tiny random Llama built on the fly).
The plugin runs as its own `housestyle serve` process attached to that vLLM (HOUSESTYLE_VLLM_URLS), so both paths
hit the same model server. Every request generates exactly --tokens tokens (ignore_eos), so both paths do the same
work. The baseline is the direct vLLM run, measured in the same run and interleaved with the plugin runs.
Then --conversations concurrent widget conversations (start + message + reply) must all succeed, --conversation-runs
times in a row. A reply the random-weight model leaves empty is handed to an agent by design (the customer is told an
agent answers): it is counted apart from errors.

Goal: plugin throughput >= 0.95 x direct, added p50 <= 5 ms; 200 concurrent conversations without an error.

Run: .venv/bin/python bench/plugin_load.py [--requests 200] [--concurrency 8,32] [--tokens 16] [--conversations 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "My SuperWidget will not charge.",
    "Where is my order GC-1234567?",
    "Can I return my NanoCharger?",
    "Do you ship to Canada?",
    "The EchoBuds keep disconnecting.",
    "How do I reset my SmartHub?",
]


def tiny_base(folder: Path) -> Path:
    base = os.environ.get("HOUSESTYLE_BASE_MODEL")
    if base:
        return Path(base)
    from tests.fixtures.vllm import _build_scratch_base  # the same tiny random Llama the test suite serves

    return _build_scratch_base(folder / "base")


async def run_load(url: str, headers: dict, model: str, requests: int, concurrency: int, tokens: int) -> dict:
    """Send `requests` chat completions, `concurrency` at a time; latency per request and overall throughput."""
    latencies: list[float] = []
    errors = 0
    queue = list(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                index = queue.pop()
                body = {
                    "model": model,
                    "max_tokens": tokens,
                    "ignore_eos": True,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
                }
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body)
                latencies.append(time.perf_counter() - started)
                errors += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": requests / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": errors,
    }


async def widget_conversations(url: str, key: str, count: int, tokens: int) -> tuple[Counter, float]:
    """`count` customers at once: start a conversation (auto mode), send a message, wait for the reply."""
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as client:

        async def customer(index: int) -> str:
            started = await client.post("/widget/conversations", json={"mode": "auto", "customer_ref": f"c{index}"})
            if started.status_code != 201:
                return f"start {started.status_code}: {started.text[:120]}"
            public_id, token = started.json()["conversation_id"], started.json()["conversation_token"]
            reply = await client.post(
                f"/widget/conversations/{public_id}/messages", headers={"X-Conversation-Token": token},
                json={"content": QUESTIONS[index % len(QUESTIONS)], "stream": False},
            )
            if reply.status_code == 200 and reply.json()["awaiting_agent"] and reply.json()["reply"] is None:
                return "handed to an agent (the model's reply was empty)"
            if reply.status_code != 200 or not reply.json()["reply"]["content"]:
                return f"reply {reply.status_code}: {reply.text[:120]}"
            return "ok"

        began = time.perf_counter()
        results = await asyncio.gather(*(customer(i) for i in range(count)), return_exceptions=True)
        wall = time.perf_counter() - began
    return Counter(result if isinstance(result, str) else repr(result)[:120] for result in results), wall


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by a process and all its children (vLLM runs its engine in child processes)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def process_cpu(pid: int) -> float:
    """CPU time of the one process (the service itself, without its redaction worker child)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def compare_paths(direct: tuple, plugin: tuple, args: argparse.Namespace, pids: dict[str, int]) -> None:
    for target in (direct, plugin):  # warm-up: compile paths, fill pools
        asyncio.run(run_load(*target, 2 * args.concurrency, args.concurrency, args.tokens))
    results: dict[str, list[dict]] = {"direct": [], "plugin": []}
    plugin_cpu = service_cpu = 0.0
    for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits both sides alike
        results["direct"].append(asyncio.run(run_load(*direct, args.requests, args.concurrency, args.tokens)))
        before, service_before = cpu_seconds(pids["plugin"]), process_cpu(pids["plugin"])
        results["plugin"].append(asyncio.run(run_load(*plugin, args.requests, args.concurrency, args.tokens)))
        plugin_cpu += cpu_seconds(pids["plugin"]) - before
        service_cpu += process_cpu(pids["plugin"]) - service_before

    def best(name: str) -> dict:
        runs = results[name]
        return {
            "rps": max(r["rps"] for r in runs),
            "p50_ms": min(r["p50_ms"] for r in runs),
            "p99_ms": min(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
        }

    d, p = best("direct"), best("plugin")
    print(
        f"\n{args.requests} requests x {args.rounds} rounds, concurrency {args.concurrency}, {args.tokens} tokens each"
    )
    print(f"{'path':<8}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, row in (("direct", d), ("plugin", p)):
        print(f"{name:<8}{row['rps']:>9.1f}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}{row['errors']:>8}")
    print(f"throughput ratio plugin/direct: {p['rps'] / d['rps']:.3f} (goal >= 0.95)")
    print(
        f"added p50: {p['p50_ms'] - d['p50_ms']:+.1f} ms (goal <= 5 ms); added p99: {p['p99_ms'] - d['p99_ms']:+.1f} ms"
    )
    requests = args.requests * args.rounds
    print(
        f"plugin CPU per request: {service_cpu / requests * 1000:.2f} ms in the service process, "
        f"{(plugin_cpu - service_cpu) / requests * 1000:.2f} ms in its redaction worker (niced; it catches up after "
        f"a burst) (on {os.cpu_count()} cores shared with vLLM, this CPU is taken from the model server)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="8,32", help="comma-separated client counts, each compared")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--conversation-runs", type=int, default=3, help="runs of the concurrent conversations")
    parser.add_argument("--skip-load", action="store_true", help="Only run the concurrent conversations.")
    args = parser.parse_args()

    from collector.settings import Settings
    from serving.vllm_server import BASE_SERVED_NAME, VllmServer, free_port

    work = Path(tempfile.mkdtemp(prefix="housestyle-bench-"))
    base = tiny_base(work)
    vllm_key = secrets.token_hex(16)  # hex: a key starting with "-" would read as a vLLM flag
    settings = Settings(home=work / "vllm-home", base_model=str(base), vllm_extra_args="--max-num-seqs 64")
    vllm = VllmServer(settings, api_key=vllm_key)
    print(f"starting vLLM on {base} ...", flush=True)
    asyncio.run(vllm.start())
    service = None
    try:
        home = work / "plugin-home"
        env = {
            **os.environ,
            "HOUSESTYLE_HOME": str(home),
            "HOUSESTYLE_DATABASE_URL": f"sqlite:///{home / 'store.db'}",
            "HOUSESTYLE_VLLM_URLS": vllm.url,
            "HOUSESTYLE_VLLM_API_KEY": vllm_key,
            "HOUSESTYLE_BASE_MODEL": str(base),
            "HOUSESTYLE_RATE_LIMIT_PER_SECOND": "100000",
            "HOUSESTYLE_RATE_LIMIT_BURST": "100000",
            # 200 customers from one loopback address: the per-address widget limit would refuse most of them
            "HOUSESTYLE_WIDGET_RATE_PER_CLIENT": "100000",
            "HOUSESTYLE_WIDGET_BURST_PER_CLIENT": "100000",
        }
        housestyle = str(Path(sys.executable).parent / "housestyle")
        keys = {
            role: subprocess.run(
                [housestyle, "keys", "create", "--role", role], env=env, capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .splitlines()[-1]
            for role in ("agent", "widget")
        }
        port = free_port()
        service_log = work / "plugin-serve.log"
        service = subprocess.Popen(
            [housestyle, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=service_log.open("w")
        )
        plugin_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{plugin_url}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if service.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the plugin service did not become ready")
            time.sleep(0.2)

        direct = (vllm.url, {"Authorization": f"Bearer {vllm_key}"}, BASE_SERVED_NAME)
        plugin = (plugin_url, {"Authorization": f"Bearer {keys['agent']}"}, "gadgetcorp-assistant")
        if not args.skip_load:
            for concurrency in [int(c) for c in str(args.concurrency).split(",")]:
                compare_paths(direct, plugin, argparse.Namespace(**{**vars(args), "concurrency": concurrency}),
                              {"plugin": service.pid, "vllm": vllm.process.pid})
        for run in range(1, args.conversation_runs + 1):
            outcomes, wall = asyncio.run(
                widget_conversations(plugin_url, keys["widget"], args.conversations, args.tokens))
            answered = outcomes.pop("ok", 0)
            handed = outcomes.pop("handed to an agent (the model's reply was empty)", 0)
            failed = args.conversations - answered - handed
            print(
                f"run {run}: {args.conversations} concurrent widget conversations: {failed} errors, {answered} answered "
                f"by the model, {handed} handed to an agent (empty model reply), in {wall:.1f} s "
                f"({args.conversations / wall:.1f} conversations/s)"
            )
            for outcome, count in outcomes.most_common(5):
                print(f"  {count} x {outcome}")
            if failed:
                print(f"  service log (JSON lines): {service_log}")
    finally:
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=60)
            except subprocess.TimeoutExpired:
                service.kill()
        vllm.kill()


if __name__ == "__main__":
    main()
