"""Plugin overhead under load: requests/s and p50/p99 through `housestyle serve` vs straight to vLLM, same work.

One real vLLM (CPU) serves a tiny base model (HOUSESTYLE_BASE_MODEL, else a tiny random Llama built on the fly).
The plugin runs as its own `housestyle serve` process attached to that vLLM (HOUSESTYLE_VLLM_URLS), so both paths
hit the same model server. Both paths send vLLM the same messages: the direct client sends what the plugin makes
of the customer's question (the company's system prompt, then the question: `core.prompts.build_messages`),
and every request generates exactly --tokens tokens (ignore_eos). The baseline is the direct run, measured in the
same run: --rounds rounds of each, in the order direct, plugin, plugin, direct, ... so drift on a shared machine
hits both alike; the throughput ratio is the median of the rounds' plugin/direct ratios. --baseline-tree runs a
second plugin from another checkout in the same rounds (before and after a change against the same direct rounds).
By default every process but vLLM's model worker runs on the CPUs vLLM leaves free (--cpu-layout; see
`pin_beside_vllm`); the clients are aiohttp, cheap beside what they measure (httpx clients took most of that
CPU and set the pace). With --instant-upstream, an OpenAI-shaped server that answers at once
(bench/instant_upstream.py) stands in for vLLM: then the plugin's own CPU and added latency are what the figures show.
Then --conversations concurrent widget conversations (start + message + reply) must all succeed, --conversation-runs
times in a row. A reply the random-weight model leaves empty is handed to an agent by design (the customer is told an
agent answers): it is counted apart from errors.

Goal: plugin throughput >= 0.95 x direct, added p50 <= 5 ms; 200 concurrent conversations without an error.

Run: .venv/bin/python bench/plugin_load.py [--requests 200] [--rounds 6] [--concurrency 8,32] [--tokens 16]
     [--conversations 200] [--instant-upstream] [--cpu-layout vllm|os] [--baseline-tree PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import aiohttp
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


@cache  # built once per question: the load generator's own cost must not differ between the paths
def direct_messages(question: str) -> list[dict[str, str]]:
    """What the plugin sends vLLM for a customer's question: the same prompt builder, the same system prompt."""
    from core.prompts import build_messages
    from core.settings import Settings

    return build_messages(Settings().system_prompt, [("user", question)])


async def run_load(
    url: str, headers: dict, model: str, requests: int, concurrency: int, tokens: int, *, full_prompt: bool = False
) -> dict:
    """Send `requests` chat completions, `concurrency` at a time; latency per request and overall throughput.
    `full_prompt`: send the messages the plugin would send vLLM for each question (the direct path)."""
    latencies: list[float] = []
    errors = 0
    queue = list(range(requests))
    # aiohttp, not httpx: the load generator shares a CPU with what it measures, and with httpx it set the pace
    # (direct to the instant upstream: 1,569 req/s at 8 clients, 429 at 32; with aiohttp 9,376 and 9,974)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                index = queue.pop()
                question = QUESTIONS[index % len(QUESTIONS)]
                body = {
                    "model": model,
                    "max_tokens": tokens,
                    "ignore_eos": True,
                    "temperature": 0,
                    "messages": direct_messages(question) if full_prompt else [{"role": "user", "content": question}],
                }
                started = time.perf_counter()
                async with client.post("/v1/chat/completions", json=body) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                errors += response.status != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"rps": requests / wall, "latencies": latencies, "errors": errors}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def widget_conversations(url: str, key: str, count: int, tokens: int) -> tuple[Counter, float]:
    """`count` customers at once: start a conversation (auto mode), send a message, wait for the reply."""
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {key}"}, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600)) as client:

        async def post(path: str, body: dict, headers: dict | None = None) -> tuple[int, str, dict | None]:
            async with client.post(path, json=body, headers=headers) as answer:
                text = await answer.text()
                return answer.status, text, json.loads(text) if answer.content_type == "application/json" else None

        async def customer(index: int) -> str:
            status, text, started = await post("/widget/conversations", {"mode": "auto", "customer_ref": f"c{index}"})
            if status != 201:
                return f"start {status}: {text[:120]}"
            status, text, reply = await post(
                f"/widget/conversations/{started['conversation_id']}/messages",
                {"content": QUESTIONS[index % len(QUESTIONS)], "stream": False},
                {"X-Conversation-Token": started["conversation_token"]},
            )
            if status == 200 and reply["awaiting_agent"] and reply["reply"] is None:
                return "handed to an agent (the model's reply was empty)"
            if status != 200 or not reply["reply"]["content"]:
                return f"reply {status}: {text[:120]}"
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


@dataclass
class LoadTarget:
    """One way to the model: its (url, headers, model) for `run_load`, whether it sends the plugin's own prompt
    (the direct path does), and the plugin service's pid (None: direct)."""

    target: tuple
    full_prompt: bool = False
    pid: int | None = None


def compare_paths(paths: dict[str, LoadTarget], args: argparse.Namespace) -> None:
    """Rounds of every path in turn (direct first, then the order reversed each round, so drift on a shared machine
    hits them alike); each plugin path's throughput ratio and added latency against the direct rounds beside it."""
    load = partial(run_load, concurrency=args.concurrency, tokens=args.tokens)
    for path in paths.values():  # warm-up: compile paths, fill pools
        asyncio.run(load(*path.target, 2 * args.concurrency, full_prompt=path.full_prompt))
    results: dict[str, list[dict]] = {name: [] for name in paths}
    cpu = {name: [0.0, 0.0] for name, path in paths.items() if path.pid}  # (service, service + redaction worker)
    order = list(paths)
    for round_number in range(args.rounds):
        for name in order if round_number % 2 == 0 else order[::-1]:
            path = paths[name]
            if path.pid:
                service_before, all_before = process_cpu(path.pid), cpu_seconds(path.pid)
            results[name].append(asyncio.run(load(*path.target, args.requests, full_prompt=path.full_prompt)))
            if path.pid:
                cpu[name][0] += process_cpu(path.pid) - service_before
                cpu[name][1] += cpu_seconds(path.pid) - all_before

    upstream = "instant upstream" if args.instant_upstream else "vLLM"
    print(f"\n{args.requests} requests x {args.rounds} rounds a path, concurrency {args.concurrency}, "
          f"{args.tokens} tokens each, {upstream}")
    print(f"{'path':<16}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}   (req/s: median of rounds; p50/p99: all)")
    for name, runs in results.items():
        latencies = [latency for run in runs for latency in run["latencies"]]
        print(f"{name:<16}{statistics.median(run['rps'] for run in runs):>9.1f}"
              f"{percentile(latencies, 0.5) * 1000:>10.1f}{percentile(latencies, 0.99) * 1000:>10.1f}"
              f"{sum(run['errors'] for run in runs):>8}")
    direct = results["direct"]
    all_direct = [latency for run in direct for latency in run["latencies"]]
    requests = args.requests * args.rounds
    for name in cpu:
        ratios = [plug["rps"] / dire["rps"] for plug, dire in zip(results[name], direct, strict=True)]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        added_p50 = [(percentile(plug["latencies"], 0.5) - percentile(dire["latencies"], 0.5)) * 1000
                     for plug, dire in zip(results[name], direct, strict=True)]
        mine = [latency for run in results[name] for latency in run["latencies"]]
        print(f"{name}: throughput ratio to direct {statistics.median(ratios):.3f} median of rounds (quartiles "
              f"{quartiles[0]:.3f} / {quartiles[2]:.3f}; each: {', '.join(f'{r:.2f}' for r in ratios)}) (goal >= 0.95)")
        print(f"{name}: added p50 {statistics.median(added_p50):+.1f} ms median of rounds (goal <= 5 ms), added mean "
              f"{(statistics.mean(mine) - statistics.mean(all_direct)) * 1000:+.1f} ms, added p99 (all) "
              f"{(percentile(mine, 0.99) - percentile(all_direct, 0.99)) * 1000:+.1f} ms")
        service, everything = cpu[name]
        print(f"{name}: CPU a request {service / requests * 1000:.2f} ms in the service process, "
              f"{(everything - service) / requests * 1000:.2f} ms in its redaction worker (niced; it catches up "
              f"after a burst), taken from the CPU the upstream uses")


def pin_beside_vllm(vllm_pid: int) -> set[int] | None:
    """vLLM (CPU) binds its model worker to some CPUs and means the rest for its engine core and API server, but
    leaves those floating: the scheduler now and then puts the engine core on the worker's CPU, and every decode
    step waits for it (on 2 cores direct p50 swung between 70 and 320 ms from one round to the next). Pin vLLM's
    other processes, and this load generator with the plugin service it starts next (and its redaction worker),
    to the CPUs vLLM leaves free. The plugin then competes with vLLM's own front end for the same CPU, as a proxy
    on the model's machine does. The CPUs pinned to; None when vLLM bound nothing (nothing is changed)."""
    import psutil

    every = set(os.sched_getaffinity(0))
    root = psutil.Process(vllm_pid)
    processes = [root, *root.children(recursive=True)]
    bound = set().union(*(set(process.cpu_affinity()) for process in processes
                          if set(process.cpu_affinity()) != every))
    free = every - bound
    if not bound or not free:
        return None
    for process in processes:
        if set(process.cpu_affinity()) == every:
            for thread in process.threads():
                os.sched_setaffinity(thread.id, free)
    os.sched_setaffinity(0, free)
    return free


@dataclass
class Upstream:
    """What the plugin and the direct path both talk to: a real vLLM, or the instant stand-in."""

    url: str
    base: str  # HOUSESTYLE_BASE_MODEL for the plugin ("": none, the plugin learns it from /v1/models)
    stop: Callable[[], None]
    pid: int | None = None  # the vLLM server's (None: the instant stand-in)


def start_upstream(args: argparse.Namespace, work: Path, key: str) -> Upstream:
    from core.settings import Settings
    from serving.vllm_server import VllmServer, free_port

    if args.instant_upstream:
        port = free_port()
        process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "instant_upstream.py"), str(port)],
                                   stdout=subprocess.PIPE, text=True)
        process.stdout.readline()  # its "instant upstream on ..." line: listening
        return Upstream(f"http://127.0.0.1:{port}", "", process.kill)
    base = tiny_base(work)
    settings = Settings(home=work / "vllm-home", base_model=str(base), vllm_extra_args="--max-num-seqs 64")
    vllm = VllmServer(settings, api_key=key)
    print(f"starting vLLM on {base} ...", flush=True)
    asyncio.run(vllm.start())
    return Upstream(vllm.url, str(base), vllm.kill, vllm.process.pid)


@dataclass
class Plugin:
    """A `housestyle serve` of this bench, with its own home and store, attached to the upstream."""

    url: str
    keys: dict[str, str]
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_plugin(home: Path, upstream: Upstream, key: str, *, tree: Path | None) -> Plugin:
    """Start the plugin service (the installed code, or the checkout `tree`: e.g. a `git worktree` of the commit
    before a change) on a free port with an agent and a widget key; wait until /ready."""
    from serving.vllm_server import free_port

    env = {
        **os.environ,
        "HOUSESTYLE_HOME": str(home),
        "HOUSESTYLE_DATABASE_URL": f"sqlite:///{home / 'store.db'}",
        "HOUSESTYLE_VLLM_URLS": upstream.url,
        "HOUSESTYLE_VLLM_API_KEY": key,
        **({"HOUSESTYLE_BASE_MODEL": upstream.base} if upstream.base else {}),
        "HOUSESTYLE_RATE_LIMIT_PER_SECOND": "100000",
        "HOUSESTYLE_RATE_LIMIT_BURST": "100000",
        # 200 customers from one loopback address: the per-address widget limit would refuse most of them
        "HOUSESTYLE_WIDGET_RATE_PER_CLIENT": "100000",
        "HOUSESTYLE_WIDGET_BURST_PER_CLIENT": "100000",
        "HOUSESTYLE_CHANNEL_MODES": '{"web": "auto"}',  # the operator's choice: a widget key may not pick auto
        **({"PYTHONPATH": str(tree)} if tree else {}),
    }
    housestyle = [sys.executable, "-m", "plugin.cli"]  # run in `tree` (or here): `-m` imports from there first
    where = tree or ROOT
    keys = {
        role: subprocess.run([*housestyle, "keys", "create", "--role", role], env=env, cwd=where,
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        for role in ("agent", "widget")
    }
    port = free_port()
    log = home / "serve.log"
    process = subprocess.Popen([*housestyle, "serve", "--port", str(port)], env=env, cwd=where,
                               stdout=subprocess.DEVNULL, stderr=log.open("w"))
    plugin = Plugin(f"http://127.0.0.1:{port}", keys, process, log)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{plugin.url}/ready").status_code == 200:
                return plugin
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            plugin.stop()
            raise SystemExit(f"the plugin service did not become ready; its log: {log}")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="8,32", help="comma-separated client counts, each compared")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of --requests per path, interleaved")
    parser.add_argument("--instant-upstream", action="store_true",
                        help="an upstream that answers at once instead of vLLM: the plugin's own cost")
    parser.add_argument("--cpu-layout", choices=["vllm", "os"], default="vllm",
                        help="vllm: everything but vLLM's model worker on the CPUs vLLM leaves free (steady rounds); "
                             "os: the scheduler places every process")
    parser.add_argument("--baseline-tree", metavar="PATH",
                        help="also run the plugin from this checkout (e.g. a git worktree of the code before a "
                             "change), interleaved with the others: before and after in the same rounds")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--conversation-runs", type=int, default=3, help="runs of the concurrent conversations")
    parser.add_argument("--skip-load", action="store_true", help="Only run the concurrent conversations.")
    args = parser.parse_args()

    from serving.vllm_server import BASE_SERVED_NAME

    work = Path(tempfile.mkdtemp(prefix="housestyle-bench-"))
    vllm_key = secrets.token_hex(16)  # hex: a key starting with "-" would read as a vLLM flag
    upstream = start_upstream(args, work, vllm_key)
    services: list[Plugin] = []
    try:
        if args.cpu_layout == "vllm" and upstream.pid is not None:
            pinned = pin_beside_vllm(upstream.pid)
            print(f"vLLM's model worker keeps its own CPUs; everything else runs on CPUs {sorted(pinned)}" if pinned
                  else "vLLM bound no CPUs: every process floats", flush=True)
        plugins = {"plugin": start_plugin(work / "plugin-home", upstream, vllm_key, tree=None)}
        services.append(plugins["plugin"])
        if args.baseline_tree:
            plugins["plugin@baseline"] = start_plugin(work / "baseline-home", upstream, vllm_key,
                                                      tree=Path(args.baseline_tree).resolve())
            services.append(plugins["plugin@baseline"])
        paths = {"direct": LoadTarget((upstream.url, {"Authorization": f"Bearer {vllm_key}"}, BASE_SERVED_NAME), True)}
        for name, plugin in plugins.items():
            paths[name] = LoadTarget((plugin.url, {"Authorization": f"Bearer {plugin.keys['agent']}"},
                                 "gadgetcorp-assistant"), False, plugin.process.pid)
        if not args.skip_load:
            for concurrency in [int(c) for c in str(args.concurrency).split(",")]:
                compare_paths(paths, argparse.Namespace(**{**vars(args), "concurrency": concurrency}))
        plugin_url, keys, service_log = plugins["plugin"].url, plugins["plugin"].keys, plugins["plugin"].log
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
        for plugin in services:
            plugin.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
