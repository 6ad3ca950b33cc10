"""`housestyle demo`: the whole loop on the bundled GadgetCorp data, on a CPU, as a client of a real service.

The base is SmolLM2-135M-Instruct (a real instruct model, packaged offline) unless `--base tiny`.

Sets up a fresh home (base model built once and cached, the sample imported, one key per role), starts
`housestyle serve` in a child process, and from then on talks to it over HTTP only, like any support platform:
customers write through the widget API in assist mode, simulated agents approve drafts that already match
GadgetCorp's reply and edit the others into it, a refresh runs through `POST /admin/refresh` (followed at
`/admin/runs/{id}`), the next round plays on the new version (`--rounds N`: N rounds, a refresh between each), and
the correction rate per version comes from `/admin/quality`.

Answer memory is on (`DEMO_MEMORY_EXAMPLES` past exchanges per prompt): a round's drafts lean on how agents
answered the same question in earlier rounds and in the sample, and the refresh trains with them as it serves.
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
FIRST_ROUND_SEED = SEED + 11  # round r's customers come from seed FIRST_ROUND_SEED + r: phrasings unlike the sample's
# past exchanges per prompt (HOUSESTYLE_MEMORY_EXAMPLES) in the demo's service: the best one. SmolLM2's `small` preset
# trains 256-token rows; three examples make a prompt of ~340 tokens, cut in training (the adapter learns little)
DEMO_MEMORY_EXAMPLES = 1
REFRESH_POLL_S = 2.0
DEMO_PREFERENCE_PAIRS = 20  # fewest pairs for the demo's SFT+DPO candidate (`--preference`)
NO_PREFERENCE = 10**9  # no store has this many pairs: SFT alone


class Exchange(BaseModel):
    """A customer's first message and the reply GadgetCorp's agents would send."""

    customer: str
    house_reply: str


def demo_exchanges(seed: int, count: int, asked: set[str] | None = None) -> list[Exchange]:
    """Fresh customer messages (none from the sample's text, none in `asked`: earlier rounds') with their canonical
    house-style replies."""
    known = {m["content"] for r in build_records(SEED) for m in r["messages"] if m["role"] == "user"}
    exchanges, seen = [], set(asked or ())
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


def demo_settings(home: Path, base: Path, preference: bool = False, memory: int = DEMO_MEMORY_EXAMPLES
                  ) -> dict[str, str]:
    """The environment of the demo's service: its own home and store, the base just built (its card names the
    training preset), assist mode, a short held-out evaluation, `memory` past exchanges per prompt; with
    `preference`, the refresh also trains SFT+DPO on the sample's edited drafts (it has over a hundred pairs), else
    SFT alone."""
    return {"HOUSESTYLE_HOME": str(home), "HOUSESTYLE_BASE_MODEL": str(base),
            "HOUSESTYLE_PREFERENCE_MIN_PAIRS": str(DEMO_PREFERENCE_PAIRS if preference else NO_PREFERENCE),
            "HOUSESTYLE_DEFAULT_REPLY_MODE": "assist", "HOUSESTYLE_DATABASE_URL": f"sqlite:///{home / 'housestyle.db'}",
            "HOUSESTYLE_REFRESH_EVAL_LIMIT": "16", "HOUSESTYLE_MEMORY_EXAMPLES": str(memory),
            # one process plays every customer and agent here: lift the per-key rate limit meant for real clients
            "HOUSESTYLE_RATE_LIMIT_PER_SECOND": "1000", "HOUSESTYLE_RATE_LIMIT_BURST": "1000",
            "HOUSESTYLE_WIDGET_RATE_PER_CLIENT": "1000", "HOUSESTYLE_WIDGET_BURST_PER_CLIENT": "1000"}


class RoundResult(BaseModel):
    """One round of the demo: the version that drafted it and that version's correction rate after it."""

    round: int
    version: str
    correction_rate: float


def refresh_and_swap(service: DemoService, console: Console, *, required: bool) -> tuple[dict, str]:
    """A refresh through the admin API; (its run, the version live after it). `required`: a refresh that does not
    make its candidate live is an error (the first one: the demo is about that swap); later ones may be refused
    by the gate, and the live version goes on."""
    run = refresh(service, console)
    candidate = run["adapter_version"]
    live = service.call("admin", "GET", "/admin/adapters")["serving"]["live"] or BASE_LABEL
    if live != candidate:
        reason = run["error"] or "gate refused"
        if required or run["status"] != "succeeded":
            raise HouseStyleError(f"the refresh did not make a new version live ({reason})")
        console.print(f"  [yellow]{candidate} stays a candidate ({reason}); {live} goes on serving[/]")
    return run, live


def curve_table(results: list[RoundResult]) -> Table:
    """The learning curve: per round, the version that drafted and how many of its drafts agents corrected."""
    table = Table(title="Drafts agents had to correct, round by round")
    for column in ("round", "version", "corrected"):
        table.add_column(column, justify="right" if column != "version" else "left")
    for result in results:
        table.add_row(str(result.round), result.version, f"{result.correction_rate:.0%}")
    return table


def run_demo(settings: Settings, *, model: BaseName = "smollm2", per_round: int = 24, port: int = 8765,
             keep_serving: bool = False, preference: bool = False, rounds: int = 2,
             memory: int = DEMO_MEMORY_EXAMPLES) -> None:
    """The demo: `rounds` rounds of `per_round` customers, a refresh between each (the first on the base)."""
    console = Console()
    home, base = prepare_home(settings.home.resolve(), model, settings, console)
    environment = demo_settings(home, base, preference, memory)
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
        asked: set[str] = set()
        results: list[RoundResult] = []
        live, first_run, after, fingerprint = BASE_LABEL, None, before, ""
        for number in range(1, rounds + 1):
            if number > 1:
                console.print(f"[bold]5/7[/] refresh {number - 1}: export → train a LoRA candidate → evaluate vs "
                              "live → gate → swap")
                run, live = refresh_and_swap(service, console, required=number == 2)
                if first_run is None:
                    first_run = run
                    after, fingerprint = ask(service, SEED_QUESTION, demo.public_model_name)
            step = "4/7" if number == 1 else "6/7"
            console.print(f"[bold]{step}[/] round {number}: {per_round} new customers, drafts from {live}")
            exchanges = demo_exchanges(FIRST_ROUND_SEED + number - 1, per_round, asked)
            asked |= {exchange.customer for exchange in exchanges}
            play_round(service, exchanges, console)
            _, rates = quality_table(service)
            results.append(RoundResult(round=number, version=live, correction_rate=rates.get(live, 0.0)))

        console.print("[bold]7/7[/] results")
        console.print(Panel(f"[dim]before:[/] {before}\n[bold]after:[/]  {after}  [dim]({fingerprint})[/]",
                            title=f'"{SEED_QUESTION}"'))
        if first_run is not None:
            for line in method_lines(first_run) or ["one method trained: SFT (`housestyle demo --preference` also "
                                                    "trains SFT+DPO on the agents' edits and lets the gate choose)"]:
                console.print(f"  {line}")
        table, rates = quality_table(service)
        console.print(table)
        if rounds > 2:
            console.print(curve_table(results))
        first, last = results[0], results[-1]
        if len(results) > 1:
            verdict = "at least halved" if last.correction_rate <= first.correction_rate / 2 else "did NOT halve"
            console.print(f"drafts agents had to correct: {first.correction_rate:.0%} ({first.version}) -> "
                          f"{last.correction_rate:.0%} ({last.version}): {verdict}")
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
    rounds: Annotated[int, typer.Option("--rounds", min=1, max=20, help="Rounds of customers, with a refresh "
                                        "between each; prints the correction rate round by round.")] = 2,
    memory: Annotated[int, typer.Option("--memory", min=0, max=10, help="Past exchanges answer memory puts into "
                                        "each prompt (HOUSESTYLE_MEMORY_EXAMPLES); 0: the adapter alone.")
                      ] = DEMO_MEMORY_EXAMPLES,
) -> None:
    """Run the whole loop on the bundled GadgetCorp data: serve, review, refresh, swap, and compare.

    Uses a fresh store in HOUSESTYLE_HOME/demo; the base model is built once in HOUSESTYLE_HOME/models/<base>.
    """
    if base not in ("smollm2", "tiny"):
        raise HouseStyleError(f"--base {base!r} is not smollm2 or tiny")
    run_demo(get_settings(), model=cast("BaseName", base), per_round=per_round, port=port, keep_serving=serve,
             preference=preference, rounds=rounds, memory=memory)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
