"""The refresh, as one straight line: export reviewed data, train a candidate, evaluate it and the live version on
the same held-out replies and golden set, gate, and apply the verdict (promote, or canary).

One refresh runs at a time across every process sharing the store (a job lock in the database). Each refresh is a
`TrainingRun` row (kind "refresh", written through `core.runs.RunLog`) whose step, progress and log admins can
watch. A failure at any step leaves the live version untouched: the candidate, if one was trained, stays a
candidate with the reason recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import BaseModel

from collector.brands import brand_id_of
from collector.coverage.handoff import refresh_coverage
from collector.export import ExportOptions, export_dataset
from collector.pii.ingest import redact_everything, redactor_for
from collector.stats import BASE_LABEL
from core.db import session_scope
from core.locks import job_lock
from core.models import DEFAULT_BRAND, AdapterEvent, RunStatus
from core.registry import live_adapter, record_held_out
from core.runs import RunLog
from core.settings import Settings
from plugin.evaluation import score_versions
from plugin.loop.decision import Applied, Swapper, apply_decision
from plugin.loop.gate import GateDecision, GateRules, gate
from plugin.loop.methods import method_candidates
from trainer.audit.report import audit_verdict
from trainer.audit.runner import run_audit
from trainer.dp.train import privacy_from_settings, train_private_adapter
from trainer.train import train_adapter

log = logging.getLogger("housestyle.refresh")

REFRESH_LOCK = "refresh"


def refresh_lock(brand: str) -> str:
    """Each brand refreshes under a lock of its own (the default brand's keeps the name from before brands)."""
    return REFRESH_LOCK if brand == DEFAULT_BRAND else f"{REFRESH_LOCK}:{brand}"


class RefreshOutcome(BaseModel):
    run_id: int
    status: RunStatus
    candidate: str | None = None
    applied: Applied | None = None  # None: not promoted (gate refused, or the run failed)
    gate: GateDecision | None = None
    error: str | None = None

    @property
    def promoted(self) -> bool:
        """The candidate now serves: live, or as a canary."""
        return self.applied is not None


def run_refresh(
    settings: Settings,
    swapper: Swapper,
    *,
    actor: str = "refresh",
    train_overrides: dict | None = None,
    on_started: Callable[[int], None] | None = None,
    vllm: tuple[str, str | None] | None = None,
) -> RefreshOutcome:
    """One whole refresh of the brand `settings` are for (`collector.brands.settings_for`; HOUSESTYLE_BRAND) under
    that brand's refresh lock; raises ConflictError if another refresh of it is running.

    `on_started(run_id)` is called once the lock is held and the run row exists (the admin API answers with it).
    `vllm`: (url, api key) of a running vLLM on the base to generate the evaluation's replies with (the service's
    own); None: HOUSESTYLE_VLLM_URLS, else a short-lived one (with HOUSESTYLE_EVAL_ENGINE=vllm).
    """
    url = settings.resolved_database_url
    base = settings.resolved_base_model
    brand = brand_id_of(settings)
    params = {"base": base, "preset": settings.train_preset, "brand": settings.brand, **(train_overrides or {})}
    with job_lock(refresh_lock(settings.brand), url=url) as held:  # renewed as we work; a dead holder's is taken over
        run = RunLog(url, kind="refresh", params=params, step="export", holder=held.holder, brand_id=brand)
        candidate: str | None = None
        try:
            if on_started is not None:
                on_started(run.run_id)
            data = settings.exports_dir / f"refresh-{run.run_id:04d}"
            run.step("export", "redacting conversations the redaction worker has not reached yet")
            redacted = redact_everything(url, lambda: redactor_for(settings))
            run.step("export", f"redacted {redacted.conversations} conversations; writing reviewed conversations "
                               f"to {data}")
            options = ExportOptions(format="chat", out=data, brand_id=brand)  # that brand's conversations only
            manifest = export_dataset(options, settings=settings, progress=False)
            run.step("export", manifest.summary().splitlines()[0], 1.0)
            coverage = refresh_coverage(settings, options, data)  # recorded beside the gate; auto mode routes by it
            gaps = coverage.get("coverage", {}).get("gaps")
            run.step("export", f"coverage: {'; '.join(gaps) if gaps else 'no gaps'}" if gaps is not None
                     else f"coverage report failed: {coverage.get('coverage_error')}", 1.0)

            privacy = privacy_from_settings(settings)  # HOUSESTYLE_TRAIN_DP_EPSILON: per-customer DP, SFT only
            run.step("train", f"LoRA on {base} (preset {settings.train_preset or 'of the base'})"
                              + (f", differentially private at epsilon {privacy.epsilon:g}" if privacy else ""))
            if privacy is not None:
                trained = train_private_adapter(base, data, settings=settings, privacy=privacy,
                                                preset=settings.train_preset, database_url=url,
                                                **(train_overrides or {}))
            else:
                trained = train_adapter(base, data, settings=settings, preset=settings.train_preset,
                                        database_url=url, **(train_overrides or {}))
            candidate = trained.version
            run.step("train", f"candidate {candidate} at {trained.path}", 1.0)
            candidate_path = trained.path
            # SFT+DPO (or KTO) beside it once there are HOUSESTYLE_PREFERENCE_MIN_PAIRS pairs; the better one goes on.
            # Preference training has no DP path: a private refresh keeps its SFT candidate.
            method = None
            if privacy is None:
                method = method_candidates(settings, base, trained, data, run, brand_id=brand, vllm=vllm)
            else:
                run.step("train", "differential privacy is on: SFT only (no DP path for preference methods)", 1.0)
            if method is not None:
                candidate, candidate_path = method[0].winner.version, method[1]

            with session_scope(url) as session:
                live = live_adapter(session, brand)
                live_version, live_path = (live.version, live.path) if live else (BASE_LABEL, None)
            run.step("evaluate", f"scoring {candidate} and {live_version} on the same held-out split "
                                 f"({settings.eval_engine} generates)")
            candidate_scores, live_scores = score_versions(
                base, [(candidate, str(candidate_path)), (live_version, live_path)], data, settings=settings,
                limit=settings.refresh_eval_limit, engine=settings.eval_engine, vllm=vllm,
            )
            run.step("evaluate", f"{candidate}: {candidate_scores.model_dump_json()}", 0.5)
            run.step("evaluate", f"{live_version}: {live_scores.model_dump_json()}", 1.0)
            with session_scope(url) as session:  # per version on the dashboard: held-out corrections, chrF, loss
                record_held_out(session, candidate, candidate_scores.model_dump(mode="json", exclude={"version"}))

            audit, verdict = None, None
            if settings.audit_on_refresh:  # a shadow adapter with canaries, and an extraction probe on the candidate
                run.step("audit", f"memorisation audit of {candidate}")
                audit = run_audit(base, data, settings=settings, candidate=candidate_path,
                                  progress=lambda message: run.step("audit", message))
                verdict = audit_verdict(audit, settings.audit_max_exposure)
                run.step("audit", ("passed: " if verdict[0] else "refused: ") + verdict[1], 1.0)

            decision = gate(candidate_scores, live_scores, GateRules.from_settings(settings), audit=verdict)
            run.step("gate", ("passed: " if decision.passed else "refused: ") + decision.reason, 1.0)
            metrics = {"gate": decision.model_dump(mode="json"), "export": manifest.model_dump(mode="json"),
                       "method": method[0].model_dump(mode="json") if method is not None else None, **coverage}
            if audit is not None and verdict is not None:  # the verdict's reason names kinds, never the values
                metrics["audit"] = {"passed": verdict[0], "reason": verdict[1],
                                    "exposure_bits": {str(count): bits for count, bits in audit.exposure.items()},
                                    "extraction_hits": len(audit.extraction.hits),
                                    "personal_values": len(audit.extraction.pii_hits)}
            if privacy is not None:  # the privacy spent (epsilon, delta, noise...), beside the gate on the run row
                metrics["privacy"] = trained.manifest.hyperparameters.get("dp")
            if not decision.passed:
                with session_scope(url) as session:
                    session.add(AdapterEvent(version=candidate, action="gate-refused", actor=actor,
                                             reason=decision.reason))
                run.finish(RunStatus.SUCCEEDED, metrics=metrics, version=candidate)
                return RefreshOutcome(run_id=run.run_id, status=RunStatus.SUCCEEDED, candidate=candidate,
                                      gate=decision)

            run.step("swap", f"applying the verdict for {candidate}")
            applied = apply_decision(swapper, candidate, canary_share=settings.refresh_canary_share, actor=actor,
                                     reason=f"refresh run {run.run_id}: {decision.reason}")
            run.step("swap", applied.describe(candidate, settings.public_model_name), 1.0)
            run.finish(RunStatus.SUCCEEDED, metrics=metrics, version=candidate)
            return RefreshOutcome(run_id=run.run_id, status=RunStatus.SUCCEEDED, candidate=candidate,
                                  applied=applied, gate=decision)
        except Exception as exc:  # any step: record it, keep the live version, tell the caller
            message = str(exc) or type(exc).__name__
            log.exception("refresh run %s failed", run.run_id)
            run.finish(RunStatus.FAILED, version=candidate, error=message)
            return RefreshOutcome(run_id=run.run_id, status=RunStatus.FAILED, candidate=candidate, error=message)
        except BaseException as exc:  # Ctrl-C, SystemExit from a signal handler: close the row, then let it stop us
            run.finish(RunStatus.FAILED, version=candidate, error=f"interrupted ({type(exc).__name__})")
            raise
