"""`housestyle demo`: the whole loop on the bundled GadgetCorp data, on a CPU, in a few minutes.

Builds the tiny base (cached), loads the sample, starts vLLM and the service, plays customers in assist mode while
simulated agents correct drafts toward the house style, refreshes (export, train, evaluate, gate, swap), plays a
second round, and prints the before/after reply and the edit rate per version.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from pydantic import BaseModel
from rich.console import Console
from rich.panel import Panel

from collector.db import session_scope
from collector.errors import HouseStyleError
from collector.sample import SAMPLE_PATH
from collector.settings import get_settings
from collector.stats import version_stats

SEED_QUESTION = "My SuperWidget is dead."
ROUND_SEEDS = (2026 + 11, 2026 + 12)  # customer phrasings unlike the sample's (which uses 2026)


class Exchange(BaseModel):
    """A customer's first message and the reply GadgetCorp's agents would send."""

    customer: str
    house_reply: str


def demo_exchanges(seed: int, count: int) -> list[Exchange]:
    """Fresh customer messages (none from the sample's text) with their canonical house-style replies."""
    from collector.sample.make_sample import SEED, build_records

    known = {m["content"] for r in build_records(SEED) for m in r["messages"] if m["role"] == "user"}
    exchanges, seen = [], set()
    for record in build_records(seed):
        first, reply = record["messages"][0], record["messages"][1]
        text = first["content"]
        if not reply.get("content") or text in known or text in seen or "@" in text or any(c.isdigit() for c in text):
            continue
        seen.add(text)
        exchanges.append(Exchange(customer=text, house_reply=reply["content"]))
    return exchanges[:count]


def normalise(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").split())


class DemoService:
    """`housestyle serve` in a child process, with an admin key and a client for the demo's calls."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = (home / "serve.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plugin.cli", "serve", "--port", str(port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.client = httpx.Client(base_url=self.url, timeout=600)

    def wait_ready(self, timeout_s: float = 900) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HouseStyleError(f"the service exited while starting; see {self.log.name}")
            try:
                if self.client.get("/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise HouseStyleError(f"the service was not ready after {timeout_s:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.client.close()
        self.log.close()


def ask(service: DemoService, key: str, question: str) -> tuple[str, str]:
    """The assistant's answer through the OpenAI-compatible endpoint, and which version gave it."""
    response = service.client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": get_settings().public_model_name, "messages": [{"role": "user", "content": question}],
              "temperature": 0, "max_tokens": 96},
    )
    response.raise_for_status()
    body = response.json()
    return body["choices"][0]["message"]["content"], body.get("system_fingerprint") or ""


def play_round(service: DemoService, keys: dict[str, str], exchanges: list[Exchange], console: Console) -> None:
    """Customers write in assist mode; a simulated agent approves house-style drafts and edits the others."""
    widget = {"Authorization": f"Bearer {keys['widget']}"}
    agent = {"Authorization": f"Bearer {keys['agent']}"}
    house_reply: dict[str, str] = {}

    def customer(exchange: Exchange) -> None:
        started = service.client.post("/widget/conversations", headers=widget, json={"channel": "web", "mode": "assist"})
        started.raise_for_status()
        conversation = started.json()["conversation_id"]
        house_reply[conversation] = exchange.house_reply
        sent = service.client.post(f"/widget/conversations/{conversation}/messages", headers=widget,
                                   json={"content": exchange.customer, "stream": False})
        sent.raise_for_status()

    with console.status(f"{len(exchanges)} customers are writing in…"), ThreadPoolExecutor(4) as pool:
        list(pool.map(customer, exchanges))
    queue = service.client.get("/reviews/queue", headers=agent, params={"limit": 200})
    queue.raise_for_status()
    by_conversation = _public_ids(service, keys)
    approved = 0
    for draft in queue.json():
        target = house_reply.get(by_conversation.get(draft["conversation_id"], ""))
        if target is None:
            continue
        service.client.post(f"/reviews/{draft['draft_id']}/claim", headers=agent, json={}).raise_for_status()
        if normalise(draft["draft"]) == normalise(target):
            service.client.post(f"/reviews/{draft['draft_id']}/approve", headers=agent, json={}).raise_for_status()
            approved += 1
        else:
            service.client.post(f"/reviews/{draft['draft_id']}/edit", headers=agent,
                                json={"final_text": target, "reason": "house style"}).raise_for_status()
    console.print(f"  agents approved {approved} drafts and corrected {len(exchanges) - approved}")


def _public_ids(service: DemoService, keys: dict[str, str]) -> dict[int, str]:
    """Internal conversation id -> the widget's public id (the review queue names the internal one)."""
    from sqlalchemy import select

    from collector.models import Conversation

    with session_scope() as session:
        return dict(session.execute(select(Conversation.id, Conversation.external_id)).all())


def prepare_home(root: Path, console: Console) -> tuple[Path, Path]:
    """A fresh demo store under HOME/demo; the tiny base is built once under HOME/models/base and reused."""
    base = root / "models" / "base"
    if not (base / "config.json").is_file():
        from trainer.base_model import build_tiny_base

        console.print(f"[bold]1/7[/] building the tiny base model in {base} (once; cached for later demos)")
        shutil.rmtree(base, ignore_errors=True)
        build_tiny_base(base)
    else:
        console.print(f"[bold]1/7[/] reusing the tiny base model in {base}")
    home = root / "demo"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return home, base


def run_demo(*, per_round: int = 24, port: int = 8765, keep_serving: bool = False) -> None:
    console = Console()
    root = get_settings().home.resolve()
    home, base = prepare_home(root, console)
    overrides = {"HOUSESTYLE_HOME": str(home), "HOUSESTYLE_BASE_MODEL": str(base), "HOUSESTYLE_TRAIN_PRESET": "tiny",
                 "HOUSESTYLE_DEFAULT_REPLY_MODE": "assist",
                 # one process plays every customer and agent here: lift the per-key rate limit meant for real clients
                 "HOUSESTYLE_RATE_LIMIT_PER_SECOND": "1000", "HOUSESTYLE_RATE_LIMIT_BURST": "1000"}
    os.environ.update(overrides)
    os.environ.pop("HOUSESTYLE_DATABASE_URL", None)
    get_settings.cache_clear()

    from collector.importer import import_file
    from plugin.keys import create_key
    from plugin.loop_commands import stats_table
    from plugin.refresh import run_refresh

    report = import_file(SAMPLE_PATH, channel="sample", source="sample")
    console.print(f"[bold]2/7[/] loaded the GadgetCorp sample: {report.added} conversations, {report.messages} messages")
    with session_scope() as session:
        keys = {role: create_key(session, role, f"demo-{role}")[1] for role in ("widget", "agent", "admin")}

    console.print("[bold]3/7[/] starting vLLM and the HouseStyle service (about a minute on 2 cores)…")
    service = DemoService(home, {**os.environ, **overrides}, port)
    try:
        service.wait_ready()
        before, _ = ask(service, keys["admin"], SEED_QUESTION)
        console.print(f"[bold]4/7[/] round 1: {per_round} customers, drafts from the base model")
        play_round(service, keys, demo_exchanges(ROUND_SEEDS[0], per_round), console)

        console.print("[bold]5/7[/] refresh: export → train a LoRA candidate → evaluate vs live → gate → swap")
        outcome = run_refresh(actor="demo")
        if outcome.gate is not None:
            console.print(f"  gate {'passed' if outcome.gate.passed else 'refused'}: {outcome.gate.reason}")
        if not outcome.promoted:
            raise HouseStyleError(f"the refresh did not promote a new version ({outcome.error or 'gate refused'})")
        console.print(f"  {outcome.candidate} is live behind '{get_settings().public_model_name}'")

        after, fingerprint = ask(service, keys["admin"], SEED_QUESTION)
        console.print(f"[bold]6/7[/] round 2: {per_round} new customers, drafts from {outcome.candidate}")
        play_round(service, keys, demo_exchanges(ROUND_SEEDS[1], per_round), console)

        console.print("[bold]7/7[/] results")
        console.print(Panel(f"[dim]before:[/] {before}\n[bold]after:[/]  {after}  [dim]({fingerprint})[/]",
                            title=f'"{SEED_QUESTION}"'))
        console.print(stats_table("Edit rate per version (simulated agents)"))
        with session_scope() as session:
            rates = {row.version: row.correction_rate for row in version_stats(session)}
        before_rate, after_rate = rates.get("base", 0.0), rates.get(outcome.candidate, 0.0)
        verdict = "at least halved" if after_rate <= before_rate / 2 else "did NOT halve"
        console.print(f"drafts agents had to correct: {before_rate:.0%} (base) -> {after_rate:.0%} "
                      f"({outcome.candidate}): {verdict}")
        if keep_serving:
            console.print(Panel(
                f"HouseStyle is serving on {service.url} — Ctrl-C stops it.\n"
                f"admin key:  {keys['admin']}\nagent key:  {keys['agent']}\nwidget key: {keys['widget']}",
                title="still running (--serve)"))
            service.process.wait()
    except httpx.HTTPStatusError as exc:
        try:
            detail = exc.response.json().get("detail")
        except ValueError:
            detail = exc.response.text[:200]
        raise HouseStyleError(f"the demo's service answered {exc.response.status_code} to {exc.request.url.path}: "
                              f"{detail}; its log is {home / 'serve.log'}") from None
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        service.stop()
