"""Soak: --customers concurrent widget conversations for --seconds through `housestyle serve` and its own vLLM (the
tiny base), at the default settings, with an adapter swap (`housestyle adapters promote`) half way through.

Each simulated customer has its own loopback source address (127.0.0.2, 127.0.0.3, ...), as customers behind
their own connections would, starts an auto-mode conversation and sends messages one after another (each tagged
with a unique marker) until the time is up, waiting for each reply. Reported: answers by HTTP status, reply latency
p50/p99 (the baseline: the same message sent by one customer alone before the soak, in the same run), how long the
swap took, how busy the machine was, and then, from the store, whether every message the service answered for
(2xx, or 5xx which promises "the message is stored") is there: `lost` must be 0.

    .venv/bin/python bench/soak.py [--customers 200] [--seconds 60] [--base DIR] [--outage]

--outage kills the service's vLLM (its whole process group, SIGKILL) 60% of the way in; the service's
supervisor restarts it. Reported as well: how long the model was down (kill to `/ready` again), the messages sent
meanwhile, and, after the soak, every customer message that has no reply after it in its conversation, counted
until none is left (the redrafter answers what the outage left hanging) or 5 minutes pass.

--base reuses a tiny base built by `housestyle base build` (else one is built, ~1 minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.db import open_store, session_scope  # noqa: E402
from core.models import Message, Role  # noqa: E402
from serving.vllm_server import free_port  # noqa: E402

QUESTIONS = ["My SuperWidget will not charge.", "Where is my order?", "Can I return my NanoCharger?",
             "Do you ship to Canada?", "The EchoBuds keep disconnecting.", "How do I reset my SmartHub?"]


def housestyle(*args: str, env: dict[str, str], check: bool = True) -> str:
    result = subprocess.run([sys.executable, "-m", "plugin.cli", *args], env=env, cwd=ROOT, capture_output=True,
                            text=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"housestyle {' '.join(args)} failed: {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its children (vLLM's engine runs in child processes)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            pass
    return total


class Customer:
    """One customer on its own source address: a conversation, then one message after another."""

    def __init__(self, index: int, url: str, key: str, tag: str | None = None) -> None:
        self.index = index
        self.tag = tag or f"c{index}"
        host = index + 2  # 127.0.0.2, 127.0.0.3, ...: the whole of 127/8 is this machine
        address = f"127.{host // 65536 % 256}.{host // 256 % 256}.{host % 256}"
        transport = httpx.AsyncHTTPTransport(local_address=address)
        self.client = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300,
                                        transport=transport)
        self.statuses: Counter = Counter()
        self.latencies: list[float] = []  # of answers with a reply (200)
        self.sent: list[tuple[str, int | str]] = []  # (marker, status) of every message sent
        self.started = False

    async def run(self, until: float) -> None:
        try:
            started = await self.client.post("/widget/conversations", json={"mode": "auto"})
        except httpx.HTTPError as exc:
            self.statuses[f"start {type(exc).__name__}"] += 1
            return
        if started.status_code != 201:
            self.statuses[f"start {started.status_code}"] += 1
            return
        conversation = started.json()["conversation_id"]
        secret = {"X-Conversation-Token": started.json()["conversation_token"]}  # only this customer holds it
        self.started = True
        number = 0
        while time.monotonic() < until:
            number += 1
            marker = f"[soak {self.tag} m{number}]"
            body = {"content": f"{marker} {QUESTIONS[(self.index + number) % len(QUESTIONS)]}", "stream": False}
            began = time.monotonic()
            try:
                answer = await self.client.post(f"/widget/conversations/{conversation}/messages", json=body,
                                                headers=secret)
                status: int | str = answer.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if status == 200:
                self.latencies.append(time.monotonic() - began)
            self.statuses[status] += 1
            self.sent.append((marker, status))
            if status == 429 or (isinstance(status, int) and status >= 500):
                retry = answer.headers.get("Retry-After", "1") if isinstance(status, int) else "1"
                await asyncio.sleep(min(5.0, float(retry) if retry.replace(".", "").isdigit() else 1.0))

    async def close(self) -> None:
        await self.client.aclose()


async def soak(url: str, key: str, customers: int, seconds: float, swap, swap_at: float, outage=None) -> dict:
    crowd = [Customer(index, url, key) for index in range(customers)]
    began = time.monotonic()
    until = began + seconds
    swap_task = asyncio.create_task(swap(began + swap_at))
    outage_task = asyncio.create_task(outage(began + seconds * 0.6)) if outage else None  # after the swap
    await asyncio.gather(*(customer.run(until) for customer in crowd))
    wall = time.monotonic() - began
    swap_result = await swap_task
    outage_result = await outage_task if outage_task else None
    for customer in crowd:
        await customer.close()
    statuses: Counter = sum((customer.statuses for customer in crowd), Counter())
    latencies = sorted(latency for customer in crowd for latency in customer.latencies)
    sent = [entry for customer in crowd for entry in customer.sent]
    return {"wall": wall, "statuses": statuses, "latencies": latencies, "sent": sent, "swap": swap_result,
            "conversations": sum(customer.started for customer in crowd), "outage": outage_result}


def kill_vllm(service_pid: int) -> int:
    """SIGKILL the process group of the service's vLLM (the API server and its engine); returns its pid."""
    import psutil

    for child in psutil.Process(service_pid).children(recursive=True):
        if "vllm.entrypoints" in " ".join(child.cmdline()):
            os.killpg(child.pid, signal.SIGKILL)
            return child.pid
    raise SystemExit("no vLLM process under the service to kill")


def without_reply(url_store: str) -> int:
    """Soak messages of customers with no assistant turn after them in their conversation."""
    later = Message.__table__.alias("later")
    reply_after = (select(later.c.id).where(later.c.conversation_id == Message.conversation_id,
                                            later.c.role == Role.ASSISTANT, later.c.id > Message.id).exists())
    with session_scope(url_store) as session:
        return session.execute(select(func.count()).select_from(Message).where(
            Message.role == Role.USER, Message.content.startswith("[soak "), ~reply_after)).scalar_one()


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--base", type=Path, help="A tiny base built by `housestyle base build` (else one is built).")
    parser.add_argument("--outage", action="store_true", help="Kill the service's vLLM 60%% of the way in.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="housestyle-soak-"))
    home = work / "home"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOUSESTYLE_HOME": str(home)}
    for name in list(env):
        if name.startswith("HOUSESTYLE_") and name not in ("HOUSESTYLE_HOME", "HOUSESTYLE_CPU_THREADS"):
            env.pop(name)  # the default settings, whatever this shell has set
    env["HOUSESTYLE_CHANNEL_MODES"] = '{"web": "auto"}'  # the operator's choice: a widget key may not pick auto
    base = args.base
    if base is None:
        print("building the tiny base ...", flush=True)
        base = home / "models" / "base"
        housestyle("base", "build", "--model", "tiny", "--out", str(base), env=env)  # the service's cost, not a model's
    else:
        (home / "models").mkdir(parents=True, exist_ok=True)
        os.symlink(base.resolve(), home / "models" / "base")
    url_store = open_store(f"sqlite:///{home / 'housestyle.db'}")

    from tests.fixtures.vllm import make_lora_adapter, register_adapter_folder

    adapter = make_lora_adapter(Path(base), work / "adapter", seed=7)
    version = register_adapter_folder(adapter, Path(base), database_url=url_store)
    widget_key = housestyle("keys", "create", "--role", "widget", "--name", "soak-widget", env=env).splitlines()[-1]

    port = free_port()
    log_path = work / "serve.log"
    print(f"starting housestyle serve (managed vLLM on {base}) ...", flush=True)
    service = subprocess.Popen([sys.executable, "-m", "plugin.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=log_path.open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if service.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the service did not become ready; its log: {log_path}")
            time.sleep(0.5)

        async def baseline() -> float:
            alone = Customer(0, url, widget_key, tag="alone")
            await alone.run(time.monotonic() + 5)
            await alone.close()
            return statistics.median(alone.latencies)

        alone_s = asyncio.run(baseline())

        async def swap(at: float) -> str:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            began = time.monotonic()
            result = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "plugin.cli", "adapters",
                                                              "promote", version, "--reason", "soak"],
                                             env=env, cwd=ROOT, capture_output=True, text=True)
            took = time.monotonic() - began
            said = (result.stdout or result.stderr).strip().splitlines()
            return f"{'ok' if result.returncode == 0 else 'FAILED'} in {took:.1f} s: {said[-1] if said else ''}"

        async def outage(at: float) -> str:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            killed, began = kill_vllm(service.pid), time.monotonic()
            async with httpx.AsyncClient(base_url=url, timeout=5) as probe:
                await asyncio.sleep(1.0)  # the supervisor notices within a second
                while time.monotonic() - began < 600:
                    try:
                        if (await probe.get("/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.5)
            return f"vLLM (pid {killed}) killed; the model was back after {time.monotonic() - began:.1f} s"

        load_before, cpu_before, t_before = os.getloadavg(), cpu_seconds(service.pid), time.monotonic()
        result = asyncio.run(soak(url, widget_key, args.customers, args.seconds, swap, args.seconds / 2,
                                  outage if args.outage else None))
        busy = (cpu_seconds(service.pid) - cpu_before) / (time.monotonic() - t_before)
        load_after = os.getloadavg()
        waiting = [(0.0, without_reply(url_store))]
        ended = time.monotonic()
        while waiting[-1][1] and time.monotonic() - ended < 300:  # the redrafter answers what was left hanging
            time.sleep(5)
            waiting.append((time.monotonic() - ended, without_reply(url_store)))
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=120)
        except subprocess.TimeoutExpired:
            service.kill()

    with session_scope(url_store) as session:
        stored = set()
        for content in session.execute(
            Message.__table__.select().with_only_columns(Message.content).where(Message.role == Role.USER)
        ).scalars():
            if content.startswith("[soak "):
                stored.add(content.split("]", 1)[0] + "]")
    answered = [(marker, status) for marker, status in result["sent"]
                if isinstance(status, int) and (200 <= status < 300 or status >= 500)]
    lost = [marker for marker, _ in answered if marker not in stored]
    refused_but_stored = [m for m, s in result["sent"] if isinstance(s, int) and 400 <= s < 500 and m in stored]
    latencies = result["latencies"]
    ok = sum(count for status, count in result["statuses"].items() if status == 200)
    print(json.dumps({"customers": args.customers, "seconds": args.seconds}))
    print(f"machine: {os.cpu_count()} cores; load average before {load_before[0]:.1f}, after {load_after[0]:.1f}; "
          f"`housestyle serve` + its vLLM used {busy:.2f} cores on average")
    print(f"conversations started: {result['conversations']} of {args.customers}; messages sent: {len(result['sent'])} "
          f"in {result['wall']:.1f} s ({ok / result['wall']:.1f} answered 200/s)")
    print("answers by status: " + ", ".join(f"{status}: {count}" for status, count in result["statuses"].most_common()))
    print(f"reply latency (200 answers): p50 {percentile(latencies, 0.5):.2f} s, "
          f"p99 {percentile(latencies, 0.99):.2f} s "
          f"(one customer alone: {alone_s:.2f} s; p50 is {percentile(latencies, 0.5) / alone_s:.1f}x that)")
    print(f"adapter swap half way: {result['swap']}")
    if result["outage"]:
        print(f"outage 60% of the way in: {result['outage']}")
    print(f"customer messages with no reply after them: {waiting[0][1]} when the soak ended, "
          f"{waiting[-1][1]} after {waiting[-1][0]:.0f} s" + (f" ({waiting})" if len(waiting) > 1 else ""))
    print(f"lost: {len(lost)} of {len(answered)} messages the service answered 2xx/5xx for are not in the store"
          + (f" (e.g. {lost[:3]})" if lost else ""))
    print(f"refused (4xx) yet stored: {len(refused_but_stored)}; service log: {log_path}")


if __name__ == "__main__":
    main()
