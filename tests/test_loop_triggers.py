"""What starts a refresh: the interval, enough new reviews, or an admin's `POST /admin/refresh` (202, 409, 503)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from collector import recorder
from core.db import session_scope
from core.locks import job_lock
from core.models import RunStatus
from core.runs import RunLog
from core.settings import Settings, get_settings
from plugin.loop.refresh import REFRESH_LOCK
from plugin.loop.scheduler import refresh_due, reviews_since_last_refresh
from serving.gateway import ServingGateway


@pytest.mark.parametrize(
    ("interval", "min_reviews", "minutes_since", "new_reviews", "expected"),
    [
        (None, None, 10_000, 10_000, None),  # no trigger configured: never
        (60, None, 59.9, 0, None),
        (60, None, 60, 0, "60 minutes passed"),
        (None, 5, 0, 4, None),
        (None, 5, 0, 5, "5 new reviews"),
        (60, 5, 61, 5, "60 minutes passed"),  # the interval is checked first
        (60, 5, 1, 7, "7 new reviews"),
    ],
)
def test_a_refresh_is_due_after_the_interval_or_enough_new_reviews(
    interval, min_reviews, minutes_since, new_reviews, expected
) -> None:
    settings = Settings(refresh_interval_minutes=interval, refresh_min_new_reviews=min_reviews)
    assert refresh_due(settings, minutes_since_last=minutes_since, new_reviews=lambda: new_reviews) == expected


def test_new_reviews_are_counted_since_the_last_refresh_and_imports_do_not_count(store_url: str) -> None:
    def review(agent: str) -> None:
        with session_scope(store_url) as session:
            conversation = recorder.start_conversation(session)
            recorder.add_message(session, conversation.id, "user", "hello?")
            draft = recorder.record_draft(session, conversation.id, "hi")
            recorder.record_review(session, draft.id, "approved", agent_id=agent)

    review("ana")
    review("import")  # imported history is not new feedback
    assert reviews_since_last_refresh(store_url) == 1
    RunLog(store_url, kind="refresh", params={}, step="export").finish(RunStatus.SUCCEEDED)
    assert reviews_since_last_refresh(store_url) == 0
    review("ana")
    assert reviews_since_last_refresh(store_url) == 1


def test_admin_refresh_without_model_servers_is_503_naming_the_cli(plugin_service) -> None:
    answer = plugin_service.client("admin").post("/admin/refresh")
    assert answer.status_code == 503 and "housestyle refresh" in answer.json()["detail"]
    assert answer.headers["Retry-After"]


@pytest.mark.vllm
def test_admin_refresh_starts_a_run_and_a_second_while_one_runs_is_409(
    store_url: str, serving_settings: Settings, start_service
) -> None:
    settings = get_settings()
    service = start_service(gateway=ServingGateway(settings, database_url=settings.resolved_database_url))
    admin = service.client("admin")
    with job_lock(REFRESH_LOCK, ttl=timedelta(minutes=5), url=store_url):  # another process is refreshing
        busy = admin.post("/admin/refresh")
    assert busy.status_code == 409 and "already running" in busy.json()["detail"]

    started = admin.post("/admin/refresh")  # an empty store: the run starts, then fails at training, recorded
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    assert f"/admin/runs/{run_id}" in started.json()["detail"]
    deadline = time.monotonic() + 120
    while (run := admin.get(f"/admin/runs/{run_id}").json())["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run["kind"] == "refresh" and run["status"] == "failed" and "empty train split" in run["error"]
    assert admin.get("/admin/runs/999999").status_code == 404
