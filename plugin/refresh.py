"""The refresh: export reviewed data, train a candidate, evaluate it against the live version, gate, swap.

One refresh runs at a time across every process sharing the store (a job lock in the database). Each refresh is a
`TrainingRun` row (kind "refresh") whose step, progress and log admins can watch. A failure at any step leaves the
live version untouched: the candidate, if one was trained, stays a candidate with the reason recorded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from collector.db import session_scope
from collector.export import ExportOptions, export_dataset
from collector.locks import job_lock
from collector.models import AdapterEvent, RunStatus, TrainingRun, utcnow
from collector.registry import live_adapter
from collector.sample import GOLDEN_PATH
from collector.settings import Settings, get_settings

log = logging.getLogger("housestyle.refresh")

REFRESH_LOCK = "refresh"
Promote = Callable[[str, str], None]  # (version, reason) -> returns once the version serves everywhere


class VersionScores(BaseModel):
    """How one version (an adapter, or the base model alone) does on the held-out split and the golden set."""

    version: str
    chrf: float
    rougeL: float
    loss: float
    golden_chrf: float


class GateDecision(BaseModel):
    passed: bool
    reason: str
    candidate: VersionScores
    live: VersionScores


class RefreshOutcome(BaseModel):
    run_id: int
    status: RunStatus
    candidate: str | None = None
    promoted: bool = False
    gate: GateDecision | None = None
    error: str | None = None


class RunRecorder:
    """Writes a refresh's step, progress and log lines to its TrainingRun row as it goes."""

    def __init__(self, params: dict, url: str | None) -> None:
        self.url = url
        self.started = time.monotonic()
        with session_scope(url) as session:
            run = TrainingRun(kind="refresh", status=RunStatus.RUNNING, step="export", params=params)
            session.add(run)
            session.flush()
            self.run_id = run.id

    def step(self, name: str, message: str, progress: float = 0.0) -> None:
        line = f"[{time.monotonic() - self.started:7.1f}s] {name}: {message}"
        log.info(line)
        with session_scope(self.url) as session:
            run = session.get(TrainingRun, self.run_id)
            run.step, run.progress = name, progress
            run.log = (run.log + "\n" + line).strip()
            session.add(run)

    def finish(self, status: RunStatus, *, metrics: dict | None = None, version: str | None = None,
               error: str | None = None) -> None:
        with session_scope(self.url) as session:
            run = session.get(TrainingRun, self.run_id)
            run.status, run.finished_at, run.progress = status, utcnow(), 1.0
            run.step = "done" if status == RunStatus.SUCCEEDED else run.step
            run.metrics, run.adapter_version, run.error = metrics, version, error
            session.add(run)


def golden_tasks(path: Path = GOLDEN_PATH) -> list[tuple[list[dict], str]]:
    """The fixed golden set: (prompt with system prompt, expected reply) pairs a new version must not regress on."""
    from trainer.generate import with_system_prompt

    tasks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            tasks.append((with_system_prompt(messages[:-1]), messages[-1]["content"]))
    return tasks


def score_version(base: str, adapter: str | None, label: str, data: Path, settings: Settings) -> VersionScores:
    """Greedy replies of `base` (+ `adapter`) on the export's test split and on the golden set, scored with chrF."""
    from trainer.data import load_export
    from trainer.evaluate import evaluate_system, reply_tasks, score
    from trainer.generate import greedy_replies, load_reply_model

    splits = load_export(data)
    test = splits.get("test") or splits.get("validation") or []
    tasks = reply_tasks(test)[: settings.refresh_eval_limit]
    model = load_reply_model(base, adapter)
    held_out = evaluate_system(model, tasks, test, [], max_new_tokens=96, max_length=512)
    golden = golden_tasks()
    replies = greedy_replies(model, [prompt for prompt, _ in golden], max_new_tokens=96)
    golden_chrf, _ = score(replies, [reference for _, reference in golden])
    return VersionScores(version=label, chrf=held_out.chrf, rougeL=held_out.rougeL, loss=held_out.loss,
                         golden_chrf=golden_chrf)


def gate(candidate: VersionScores, live: VersionScores, settings: Settings) -> GateDecision:
    """The candidate must beat the live version on held-out chrF and loss by the margins, and hold the golden set."""
    problems = []
    if candidate.chrf < live.chrf + settings.gate_min_chrf_gain:
        problems.append(f"held-out chrF {candidate.chrf:.1f} does not beat {live.version}'s {live.chrf:.1f} "
                        f"by {settings.gate_min_chrf_gain:g}")
    if candidate.loss > live.loss - settings.gate_min_loss_gain:
        problems.append(f"held-out loss {candidate.loss:.3f} is not below {live.version}'s {live.loss:.3f} "
                        f"by {settings.gate_min_loss_gain:g}")
    if candidate.golden_chrf < live.golden_chrf - settings.gate_golden_tolerance:
        problems.append(f"golden-set chrF {candidate.golden_chrf:.1f} regresses from {live.version}'s "
                        f"{live.golden_chrf:.1f}")
    if problems:
        return GateDecision(passed=False, reason="; ".join(problems), candidate=candidate, live=live)
    return GateDecision(
        passed=True, candidate=candidate, live=live,
        reason=(f"chrF {candidate.chrf:.1f} vs {live.chrf:.1f}, loss {candidate.loss:.3f} vs {live.loss:.3f}, "
                f"golden chrF {candidate.golden_chrf:.1f} vs {live.golden_chrf:.1f} ({live.version})"),
    )


def run_refresh(
    *,
    promote: Promote | None = None,
    actor: str = "refresh",
    settings: Settings | None = None,
    url: str | None = None,
    train_overrides: dict | None = None,
) -> RefreshOutcome:
    """One whole refresh under the store's refresh lock; raises ConflictError if another is running."""
    from trainer.train import train_adapter

    settings = settings or get_settings()
    base = settings.base_model or str(settings.models_dir / "base")
    with job_lock(REFRESH_LOCK, ttl=timedelta(hours=6), url=url):
        recorder = RunRecorder({"base": base, "preset": settings.train_preset, **(train_overrides or {})}, url)
        candidate: str | None = None
        try:
            data = settings.exports_dir / f"refresh-{recorder.run_id:04d}"
            recorder.step("export", f"writing reviewed conversations to {data}")
            manifest = export_dataset(ExportOptions(format="chat", out=data), progress=False)
            recorder.step("export", manifest.summary().splitlines()[0], 1.0)

            recorder.step("train", f"LoRA on {base} (preset {settings.train_preset})")
            trained = train_adapter(base, data, preset=settings.train_preset, database_url=url,
                                    **(train_overrides or {}))
            candidate = trained.version
            recorder.step("train", f"candidate {candidate} at {trained.path}", 1.0)

            with session_scope(url) as session:
                live = live_adapter(session)
                live_version, live_path = (live.version, live.path) if live else ("base", None)
            recorder.step("evaluate", f"scoring {candidate} and {live_version} on the same held-out split")
            candidate_scores = score_version(base, str(trained.path), candidate, data, settings)
            recorder.step("evaluate", f"{candidate}: {candidate_scores.model_dump_json()}", 0.5)
            live_scores = score_version(base, live_path, live_version, data, settings)
            recorder.step("evaluate", f"{live_version}: {live_scores.model_dump_json()}", 1.0)

            decision = gate(candidate_scores, live_scores, settings)
            recorder.step("gate", ("passed: " if decision.passed else "refused: ") + decision.reason, 1.0)
            metrics = {"gate": decision.model_dump(mode="json"), "export": manifest.model_dump(mode="json")}
            if not decision.passed:
                with session_scope(url) as session:
                    session.add(AdapterEvent(version=candidate, action="gate-refused", actor=actor,
                                             reason=decision.reason))
                recorder.finish(RunStatus.SUCCEEDED, metrics=metrics, version=candidate)
                return RefreshOutcome(run_id=recorder.run_id, status=RunStatus.SUCCEEDED, candidate=candidate,
                                      gate=decision)

            recorder.step("swap", f"promoting {candidate}")
            (promote or promote_through_serving(actor))(candidate, f"refresh run {recorder.run_id}: {decision.reason}")
            recorder.step("swap", f"{candidate} serves behind {settings.public_model_name}", 1.0)
            recorder.finish(RunStatus.SUCCEEDED, metrics=metrics, version=candidate)
            return RefreshOutcome(run_id=recorder.run_id, status=RunStatus.SUCCEEDED, candidate=candidate,
                                  promoted=True, gate=decision)
        except Exception as exc:  # any step: record it, keep the live version, tell the caller
            message = str(exc) or type(exc).__name__
            log.exception("refresh run %s failed", recorder.run_id)
            recorder.finish(RunStatus.FAILED, version=candidate, error=message)
            return RefreshOutcome(run_id=recorder.run_id, status=RunStatus.FAILED, candidate=candidate,
                                  error=message)


def promote_through_serving(actor: str) -> Promote:
    """Promote via the running `housestyle serve` if there is one, else in the registry for the next start."""
    from serving.remote import promote_version

    def promote(version: str, reason: str) -> None:
        promote_version(version, actor=actor, reason=reason)

    return promote
