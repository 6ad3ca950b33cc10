"""`housestyle demo`: the whole loop on the bundled GadgetCorp data, on a CPU, as a client of a real service.

The base is SmolLM2-135M-Instruct (a real instruct model, packaged offline) unless `--base tiny`.

Sets up a fresh home (base model built once and cached, the sample imported, one key per role), starts
`housestyle serve` in a child process, and from then on talks to it over HTTP only, like any support platform:
customers write through the widget API in assist mode, simulated agents approve drafts that already match
GadgetCorp's reply and edit the others into it, a refresh runs through `POST /admin/refresh` (followed at
`/admin/runs/{id}`), a second round plays on the new version, and the correction rate per version comes from
`/admin/quality`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import httpx
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from collector.importer import import_file
from collector.sample import SAMPLE_PATH
from collector.sample.make_sample import SEED, build_records
from collector.stats import BASE_LABEL
from core.changes import same_text
from core.db import open_store, session_scope
from core.errors import HouseStyleError
from core.settings import Settings, get_settings
from plugin.api.keys import create_key

if TYPE_CHECKING:  # the trainer (torch, transformers) is imported by the demo itself, not by every CLI command
    from trainer.base_model import BaseName

SEED_QUESTION = "My SuperWidget is dead."
ROUND_SEEDS = (SEED + 11, SEED + 12)  # customer phrasings unlike the sample's
REFRESH_POLL_S = 2.0
DEMO_PREFERENCE_PAIRS = 20  # fewest pairs for the demo's SFT+DPO candidate (`--preference`)
NO_PREFERENCE = 10**9  # no store has this many pairs: SFT alone


class Exchange(BaseModel):
    """A customer's first message and the reply GadgetCorp's agents would send."""

    customer: str
    house_reply: str


def demo_exchanges(seed: int, count: int) -> list[Exchange]:
    """Fresh customer messages (none from the sample's text) with their canonical house-style replies."""
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


class DemoService:
    """`housestyle serve` in a child process (its own process group), and an HTTP client for each role's key."""

    def __init__(self, home: Path, env: dict[str, str], port: int, keys: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = (home / "serve.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plugin.cli", "serve", "--port", str(port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.clients = {role: httpx.Client(base_url=self.url, timeout=600, headers={"Authorization": f"Bearer {key}"})
                        for role, key in keys.items()}

    def wait_ready(self, timeout_s: float = 900) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HouseStyleError(f"the service exited while starting; see {self.log.name}")
            try:
                if self.clients["admin"].get("/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise HouseStyleError(f"the service was not ready after {timeout_s:.0f} s; see {self.log.name}")

    def call(self, role: str, method: str, path: str, **kwargs: Any) -> Any:
        response = self.clients[role].request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        for client in self.clients.values():
            client.close()
        self.log.close()


def ask(service: DemoService, question: str, model: str) -> tuple[str, str]:
    """The assistant's answer through the OpenAI-compatible endpoint, and which version gave it."""
    body = service.call("agent", "POST", "/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 96})
    return body["choices"][0]["message"]["content"], body.get("system_fingerprint") or ""


def play_round(service: DemoService, exchanges: list[Exchange], console: Console) -> None:
    """Customers write in assist mode; a simulated agent approves house-style drafts and edits the others."""
    def customer(exchange: Exchange) -> None:
        conversation = service.call("widget", "POST", "/widget/conversations", json={"channel": "web", "mode": "assist"})
        service.call("widget", "POST", f"/widget/conversations/{conversation['conversation_id']}/messages",
                     json={"content": exchange.customer, "stream": False},
                     headers={"X-Conversation-Token": conversation["conversation_token"]})

    # one after another: every run stores the same conversations in the same order, so training sees the same data
    with console.status(f"{len(exchanges)} customers are writing in…"):
        for exchange in exchanges:
            customer(exchange)
    house_reply = {exchange.customer: exchange.house_reply for exchange in exchanges}
    approved = corrected = 0
    for draft in service.call("agent", "GET", "/reviews/queue", params={"limit": 200}):
        target = house_reply.get(draft["context"][-1]["content"]) if draft["context"] else None
        if target is None:
            continue
        service.call("agent", "POST", f"/reviews/{draft['draft_id']}/claim", json={})
        if same_text(draft["draft"], target):
            service.call("agent", "POST", f"/reviews/{draft['draft_id']}/approve", json={})
            approved += 1
        else:
            service.call("agent", "POST", f"/reviews/{draft['draft_id']}/edit",
                         json={"final_text": target, "reason": "house style"})
            corrected += 1
    console.print(f"  agents approved {approved} drafts and corrected {corrected}")


def refresh(service: DemoService, console: Console) -> dict:
    """Start a refresh through the admin API and follow its run to the end, printing each step as it comes."""
    run_id = service.call("admin", "POST", "/admin/refresh")["run_id"]
    shown = ""
    while True:
        run = service.call("admin", "GET", f"/admin/runs/{run_id}")
        tail = run["log_tail"]
        new = tail[len(shown):] if tail.startswith(shown) else tail
        for line in new.splitlines():
            if line.strip():
                console.print(f"  [dim]{line.strip()}[/]")
        shown = tail
        if run["status"] in ("succeeded", "failed"):
            return run
        time.sleep(REFRESH_POLL_S)


def quality_table(service: DemoService) -> tuple[Table, dict[str, float]]:
    """The correction rate per version from the service (the number the automatic rollback acts on)."""
    rows = service.call("admin", "GET", "/admin/quality")
    table = Table(title="Drafts agents had to correct, per version (simulated agents)")
    for column in ("version", "reviews", "corrected", "approved", "edited", "rejected"):
        table.add_column(column, justify="left" if column == "version" else "right")
    for row in rows:
        table.add_row(row["version"], str(row["reviews"]), f"{row['correction_rate']:.0%}", str(row["approved"]),
                      str(row["edited"]), str(row["rejected"]))
    return table, {row["version"]: row["correction_rate"] for row in rows}


def method_lines(run: dict) -> list[str]:
    """One line per training method the refresh compared (held-out edit distance; which won), none for SFT alone."""
    recorded = (run.get("metrics") or {}).get("method")
    if not recorded:
        return []
    from plugin.loop.gate import MethodChoice

    choice = MethodChoice.model_validate(recorded)
    return [f"{'won ' if c.version == choice.winner.version else 'lost'}  {c.preference.line()}"
            for c in choice.candidates]


def prepare_home(root: Path, model: BaseName, settings: Settings, console: Console) -> tuple[Path, Path]:
    """A fresh demo store under HOME/demo; the base is built once under HOME/models/<model> and reused."""
    from trainer.base_model import build_base

    base = root / "models" / model
    with console.status(f"[bold]1/7[/] the {model} base model in {base} (built once; cached for later demos)"):
        _, built = build_base(model, base, settings=settings)
    console.print(f"[bold]1/7[/] {'built' if built else 'reusing'} the {model} base model in {base}")
    home = root / "demo"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return home, base


def demo_settings(home: Path, base: Path, preference: bool = False) -> dict[str, str]:
    """The environment of the demo's service: its own home and store, the base just built (its card names the
    training preset), assist mode, a short held-out evaluation; with `preference`, the refresh also trains SFT+DPO
    on the sample's edited drafts (it has over a hundred pairs), else SFT alone."""
    return {"HOUSESTYLE_HOME": str(home), "HOUSESTYLE_BASE_MODEL": str(base),
            "HOUSESTYLE_PREFERENCE_MIN_PAIRS": str(DEMO_PREFERENCE_PAIRS if preference else NO_PREFERENCE),
            "HOUSESTYLE_DEFAULT_REPLY_MODE": "assist", "HOUSESTYLE_DATABASE_URL": f"sqlite:///{home / 'housestyle.db'}",
            "HOUSESTYLE_REFRESH_EVAL_LIMIT": "16",
            # one process plays every customer and agent here: lift the per-key rate limit meant for real clients
            "HOUSESTYLE_RATE_LIMIT_PER_SECOND": "1000", "HOUSESTYLE_RATE_LIMIT_BURST": "1000",
            "HOUSESTYLE_WIDGET_RATE_PER_CLIENT": "1000", "HOUSESTYLE_WIDGET_BURST_PER_CLIENT": "1000"}


def run_demo(settings: Settings, *, model: BaseName = "smollm2", per_round: int = 24, port: int = 8765,
             keep_serving: bool = False, preference: bool = False) -> None:
    console = Console()
    home, base = prepare_home(settings.home.resolve(), model, settings, console)
    environment = demo_settings(home, base, preference)
    demo = Settings(**{name[len("HOUSESTYLE_"):].lower(): value for name, value in environment.items()})
    url = open_store(demo.resolved_database_url)
    report = import_file(SAMPLE_PATH, url=url, channel="sample", source="sample")
    console.print(f"[bold]2/7[/] loaded the GadgetCorp sample: {report.added} conversations, {report.messages} messages")
    with session_scope(url) as session:
        keys = {role: create_key(session, role, f"demo-{role}")[1] for role in ("widget", "agent", "admin")}

    console.print("[bold]3/7[/] starting vLLM and the HouseStyle service (about a minute on 2 cores)…")
    service = DemoService(home, {**os.environ, **environment}, port, keys)
    try:
        service.wait_ready()
        before, _ = ask(service, SEED_QUESTION, demo.public_model_name)
        console.print(f"[bold]4/7[/] round 1: {per_round} customers, drafts from the base model")
        play_round(service, demo_exchanges(ROUND_SEEDS[0], per_round), console)

        console.print("[bold]5/7[/] refresh: export → train a LoRA candidate → evaluate vs live → gate → swap")
        run = refresh(service, console)
        candidate = run["adapter_version"]
        live = service.call("admin", "GET", "/admin/adapters")["serving"]["live"]
        if run["status"] != "succeeded" or live != candidate:
            raise HouseStyleError(f"the refresh did not make a new version live ({run['error'] or 'gate refused'})")

        after, fingerprint = ask(service, SEED_QUESTION, demo.public_model_name)
        console.print(f"[bold]6/7[/] round 2: {per_round} new customers, drafts from {candidate}")
        play_round(service, demo_exchanges(ROUND_SEEDS[1], per_round), console)

        console.print("[bold]7/7[/] results")
        console.print(Panel(f"[dim]before:[/] {before}\n[bold]after:[/]  {after}  [dim]({fingerprint})[/]",
                            title=f'"{SEED_QUESTION}"'))
        for line in method_lines(run) or ["one method trained: SFT (`housestyle demo --preference` also trains "
                                          "SFT+DPO on the agents' edits and lets the gate choose)"]:
            console.print(f"  {line}")
        table, rates = quality_table(service)
        console.print(table)
        before_rate, after_rate = rates.get(BASE_LABEL, 0.0), rates.get(candidate, 0.0)
        verdict = "at least halved" if after_rate <= before_rate / 2 else "did NOT halve"
        console.print(f"drafts agents had to correct: {before_rate:.0%} (base) -> {after_rate:.0%} ({candidate}): {verdict}")
        if keep_serving:
            console.print(Panel(
                f"HouseStyle is serving on {service.url} — Ctrl-C stops it.\n"
                + "\n".join(f"{role} key: {key}" for role, key in keys.items()), title="still running (--serve)"))
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


def demo_command(
    base: Annotated[str, typer.Option("--base", help="smollm2 (a real instruct model, the default) or tiny (the "
                                      "2-layer test base: the loop in a minute, not a real voice).")] = "smollm2",
    per_round: Annotated[int, typer.Option(help="Customers per round.")] = 24,
    port: Annotated[int, typer.Option(help="Port of the demo's service on 127.0.0.1.")] = 8765,
    serve: Annotated[bool, typer.Option("--serve", help="Keep the service up afterwards for the web UI.")] = False,
    preference: Annotated[bool, typer.Option("--preference", help="The refresh also trains SFT+DPO on the agents' "
                                             "edits beside SFT, and prints one line per method (held-out edit "
                                             "distance, which won). On SmolLM2 DPO adds many minutes on 2 cores.")
                          ] = False,
) -> None:
    """Run the whole loop on the bundled GadgetCorp data: serve, review, refresh, swap, and compare.

    Uses a fresh store in HOUSESTYLE_HOME/demo; the base model is built once in HOUSESTYLE_HOME/models/<base>.
    """
    if base not in ("smollm2", "tiny"):
        raise HouseStyleError(f"--base {base!r} is not smollm2 or tiny")
    run_demo(get_settings(), model=cast("BaseName", base), per_round=per_round, port=port, keep_serving=serve,
             preference=preference)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
