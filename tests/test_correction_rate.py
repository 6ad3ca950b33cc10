"""One correction rate: (edited + rejected) / reviews, the same on the dashboard, `housestyle stats`, /metrics and in
the rollback guard that acts on it."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from collector import recorder
from collector.stats import correction_rate, is_live_review, version_stats
from core.db import session_scope
from core.models import AdapterStatus, Review, Role
from core.registry import register_adapter, set_status
from core.settings import get_settings
from plugin.cli import app
from plugin.loop.rollback import check_live_regression


@pytest.mark.parametrize(
    ("edited", "rejected", "reviews", "rate"),
    [(0, 0, 0, 0.0), (0, 0, 10, 0.0), (3, 0, 10, 0.3), (0, 2, 10, 0.2), (3, 2, 10, 0.5), (5, 5, 10, 1.0)],
)
def test_the_correction_rate_counts_edits_and_rejections_over_reviews(edited, rejected, reviews, rate) -> None:
    assert correction_rate(edited, rejected, reviews) == pytest.approx(rate)


@pytest.mark.parametrize(("agent_id", "live"), [("alice", True), ("import", False), ("auto-rollback", True)])
def test_a_live_review_is_any_agents_but_imported_historys_in_python_and_in_sql(
    store_url: str, agent_id: str, live: bool
) -> None:
    with session_scope(store_url) as session:
        conversation = recorder.start_conversation(session)
        recorder.add_message(session, conversation.id, Role.USER, "a question")
        draft = recorder.record_draft(session, conversation.id, "a draft")
        recorder.record_review(session, draft.id, "approved", agent_id=agent_id)
        counted = session.execute(select(func.count(Review.id)).where(is_live_review(Review.agent_id))).scalar_one()
    assert is_live_review(agent_id) is live
    assert counted == int(live)


def reviews_of(url: str, version: str, *, approved: int, edited: int, rejected: int) -> None:
    with session_scope(url) as session:
        for decision, count in (("approved", approved), ("edited", edited), ("rejected", rejected)):
            for index in range(count):
                conversation = recorder.start_conversation(session)
                recorder.add_message(session, conversation.id, Role.USER, f"question {index}")
                draft = recorder.record_draft(session, conversation.id, "a draft", adapter_version=version)
                recorder.record_review(session, draft.id, decision, agent_id="agent",
                                       final_text="another reply" if decision != "approved" else None)


def test_dashboard_stats_metrics_and_the_rollback_guard_report_the_same_correction_rate(
    plugin_service, store_url: str
) -> None:
    with session_scope(store_url) as session:
        for version in ("v0001-aaaaaaaa", "v0002-bbbbbbbb"):
            register_adapter(session, version=version, path=f"/adapters/{version}", base_model="base", rank=8)
        set_status(session, "v0001-aaaaaaaa", AdapterStatus.LIVE, action="promote")
    reviews_of(store_url, "v0001-aaaaaaaa", approved=45, edited=3, rejected=2)  # 5 of 50 corrected: 10%
    with session_scope(store_url) as session:
        set_status(session, "v0001-aaaaaaaa", AdapterStatus.RETIRED, action="retire")
        set_status(session, "v0002-bbbbbbbb", AdapterStatus.LIVE, action="promote")
    reviews_of(store_url, "v0002-bbbbbbbb", approved=20, edited=8, rejected=2)  # 10 of 30 corrected: 33.3%
    expected = {"v0001-aaaaaaaa": 5 / 50, "v0002-bbbbbbbb": 10 / 30}
    admin = plugin_service.client("admin")

    series = admin.get("/admin/correction-rate", params={"bucket_minutes": 60 * 24 * 31}).json()["series"]
    dashboard = {s["version"]: s["points"][0]["correction_rate"] for s in series}
    quality = {row["version"]: row["correction_rate"] for row in admin.get("/admin/quality").json()}
    metrics = {
        version: float(value)
        for version, value in re.findall(r'housestyle_correction_rate\{adapter_version="([^"]+)"\} ([0-9.e-]+)',
                                         admin.get("/metrics").text)
    }
    guard = check_live_regression(get_settings())
    stats = CliRunner().invoke(app, ["stats"])

    assert dashboard == pytest.approx(expected) and quality == pytest.approx(expected)
    assert metrics == pytest.approx(expected)
    assert (guard.previous, guard.live) == ("v0001-aaaaaaaa", "v0002-bbbbbbbb")
    assert (guard.test.old_rate, guard.test.new_rate) == pytest.approx((expected["v0001-aaaaaaaa"],
                                                                        expected["v0002-bbbbbbbb"]))
    assert stats.exit_code == 0, stats.output
    for version, rate in expected.items():
        assert re.search(rf"{version}\s.*?\b{rate:.0%}", stats.output), stats.output
    with session_scope(store_url) as session:
        assert {row.version: row.correction_rate for row in version_stats(session)} == pytest.approx(expected)
