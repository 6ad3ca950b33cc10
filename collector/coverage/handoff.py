"""The coverage the live version was trained with, for auto-mode routing and the dashboard, read once and cached.

The report comes from the refresh that trained the live version (its run metrics keep it beside the gate: counts
from that run's own export); while no refresh has recorded one for the live version (a version promoted by hand,
the base model, an older store) it is computed from the store by the export's split rule. It is recomputed when
the live version, the knowledge base or the refresh record changes, and a computed one at most every
`RECOMPUTE_S` seconds. Thresholds are always the current settings' (HOUSESTYLE_COVERAGE_*), so changing them takes
effect without a refresh. A store with no training conversation at all routes nothing (a fresh install in auto
mode answers as configured).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from collector.brands import brand_id_of
from collector.coverage.gaps import CoverageThresholds, topic_gaps
from collector.coverage.report import CoverageReport, coverage_report
from collector.coverage.routing import route_by_coverage
from collector.export import ExportOptions
from collector.knowledge.store import current_revision
from collector.knowledge.topics import NO_INTENT, NO_PRODUCT
from collector.stats import BASE_LABEL
from core.db import session_scope
from core.models import ReplyMode, RunStatus, TrainingRun
from core.prompts import USER
from core.registry import live_adapter
from core.settings import Settings

log = logging.getLogger("housestyle.coverage")

RECOMPUTE_S = 600.0  # a report computed from the store (no refresh record) is at most this old
COVERAGE_METRIC = "coverage"  # the key of the report in a refresh run's metrics


@dataclass(frozen=True)
class LiveCoverage:
    """The coverage report that stands for the live version, and where it came from."""

    report: CoverageReport
    live_version: str  # BASE_LABEL while no adapter is live
    run_id: int | None  # the refresh run that recorded it; None: computed from the store


_cache: dict[tuple[str, int], tuple[tuple, float, LiveCoverage]] = {}
_lock = threading.Lock()


def _refresh_run(session: Session, version: str) -> int | None:
    """The newest succeeded refresh run that trained `version` (one small query per message; its metrics are read
    only when it changes)."""
    return session.execute(
        select(TrainingRun.id)
        .where(TrainingRun.kind == "refresh", TrainingRun.status == RunStatus.SUCCEEDED,
               TrainingRun.adapter_version == version)
        .order_by(TrainingRun.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def with_thresholds(report: CoverageReport, thresholds: CoverageThresholds) -> CoverageReport:
    """The report with every topic's gaps judged against `thresholds` ("(no product)" and "other" never have any)."""
    report = report.model_copy(deep=True, update={"thresholds": thresholds})
    for topic in [*report.products, *report.intents]:
        topic.gaps = [] if topic.name in (NO_PRODUCT, NO_INTENT) else topic_gaps(topic, thresholds)
    return report


def live_coverage(settings: Settings, session: Session) -> LiveCoverage:
    """The live version's coverage report of the settings' brand (cached per store and brand; see the module
    docstring)."""
    brand = brand_id_of(settings, session)
    live = live_adapter(session, brand)
    version = live.version if live is not None else BASE_LABEL
    run_id = _refresh_run(session, version) if live is not None else None
    stamp = (version, run_id, current_revision(session))
    key = (settings.resolved_database_url, brand)
    cached = _cache.get(key)
    fresh = cached is not None and cached[0] == stamp and (
        cached[2].run_id is not None or time.monotonic() - cached[1] < RECOMPUTE_S
    )
    if fresh:
        found = cached[2]
    else:
        with _lock:
            metrics = (session.get(TrainingRun, run_id).metrics or {}) if run_id is not None else {}
            if COVERAGE_METRIC in metrics:
                found = LiveCoverage(CoverageReport.model_validate(metrics[COVERAGE_METRIC]), version, run_id)
            else:  # no refresh trained it, or its report failed: the store by the split rule
                options = ExportOptions(out=Path("."), brand_id=brand)  # that brand's conversations only
                found = LiveCoverage(coverage_report(session, options=options, settings=settings), version, None)
            _cache[key] = (stamp, time.monotonic(), found)
    thresholds = CoverageThresholds.from_settings(settings)
    if found.report.thresholds != thresholds:
        found = LiveCoverage(with_thresholds(found.report, thresholds), found.live_version, found.run_id)
    return found


def coverage_handoff(
    settings: Settings, session: Session, mode: ReplyMode, transcript: list[tuple[str, Any]]
) -> str | None:
    """Why an auto-mode reply to this transcript goes to an agent first (a topic the live version has not learned);
    None: it may go out (assist mode, routing off, or every topic learned). `transcript`: (role, text), oldest
    first, ending with the customer's new message."""
    if mode != ReplyMode.AUTO or not settings.coverage_routing:
        return None
    said = [str(text or "") for role, text in transcript if str(role) == USER]
    if not said:
        return None
    report = live_coverage(settings, session).report
    if not report.splits.get("train"):
        return None  # no reviewed conversation to train on yet: nothing is learned or unlearned, auto mode as set
    return route_by_coverage(report, said[-1], earlier=said[:-1]).reason


def refresh_coverage(settings: Settings, options: ExportOptions, export_dir: Path) -> dict[str, Any]:
    """What a refresh records beside its gate: {"coverage": the report on its own export} (per-split counts from
    the records training saw), or {"coverage_error": why} when the report could not be made (the refresh goes on:
    a report is no reason to hold back a better adapter)."""
    try:
        with session_scope(settings.resolved_database_url) as session:
            report = coverage_report(session, options=options, export_dir=export_dir, settings=settings)
    except Exception as error:  # noqa: BLE001 (any failure of the report is recorded, never raised into the refresh)
        log.exception("coverage report for %s failed", export_dir)
        return {"coverage_error": str(error) or type(error).__name__}
    return {COVERAGE_METRIC: report.model_dump(mode="json")}
