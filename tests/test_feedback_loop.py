"""The feedback loop: agents correct drafts, a refresh trains and gates a candidate, the swap makes agents' lives easier."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import pytest
from sacrebleu.metrics import CHRF
from sqlalchemy import func, select
from typer.testing import CliRunner

from collector import recorder
from collector.db import session_scope
from collector.errors import ConflictError
from collector.importer import import_file
from collector.locks import current_holder
from collector.models import AdapterEvent, AdapterStatus, Message, Review, Role, RunStatus, TrainingRun
from collector.registry import get_adapter, live_adapter, register_adapter, set_status
from collector.sample import SAMPLE_PATH
from collector.settings import get_settings
from collector.stats import version_stats
from plugin.cli import app
from plugin.refresh import REFRESH_LOCK, run_refresh
from plugin.rollback_guard import check_live_regression
from plugin.scheduler import LoopScheduler
from serving.control import AdminClient, ControlFile
from serving.gateway import ServingGateway

SEED_QUESTION = "My SuperWidget is dead."
SEED_REPLY = (
    "I'm sorry to hear you're having trouble with your SuperWidget! Have you tried plugging it into a different "
    "power outlet and ensuring the power switch is fully engaged?"
)


@pytest.fixture
def loop_settings(store_url: str, tiny_base: Path, monkeypatch: pytest.MonkeyPatch):
    """The store of this test (SQLite, then Postgres) with the sample loaded; refreshes train the tiny base."""
    monkeypatch.setenv("HOUSESTYLE_BASE_MODEL", str(tiny_base))
    monkeypatch.setenv("HOUSESTYLE_TRAIN_PRESET", "tiny")
    monkeypatch.setenv("HOUSESTYLE_REFRESH_EVAL_LIMIT", "32")
    get_settings.cache_clear()
    import_file(SAMPLE_PATH, source="sample")
    return get_settings()


def agent_corrects(service, customer: str, house_reply: str) -> str:
    """A customer writes in assist mode and an agent edits the draft into the house reply; returns the draft."""
    widget, agent = service.client("widget"), service.client("agent")
    conversation = widget.post("/widget/conversations", json={"channel": "web", "mode": "assist"}).json()
    sent = widget.post(f"/widget/conversations/{conversation['conversation_id']}/messages",
                       json={"content": customer, "stream": False})
    assert sent.status_code == 200, sent.text
    draft = next(d for d in agent.get("/reviews/queue").json() if d["context"][-1]["content"] == customer)
    edited = agent.post(f"/reviews/{draft['draft_id']}/edit", json={"final_text": house_reply})
    assert edited.status_code == 200, edited.text
    return draft["draft"]


@pytest.mark.vllm
@pytest.mark.slow
def test_refresh_swaps_in_a_candidate_that_answers_in_the_house_style(
    loop_settings, serving_settings, start_service
) -> None:
    settings = get_settings()
    service = start_service(gateway=ServingGateway(settings, database_url=settings.resolved_database_url))
    draft = agent_corrects(service, "Hi, my MegaGadget won't charge at all.",
                           "I'm sorry to hear you're having trouble with your MegaGadget! Please try a different "
                           "USB-C cable and charger.")
    assert draft  # the base model drafted something
    admin = AdminClient(ControlFile(pid=0, url=service.url, control_token="test-control-token"))

    outcome = run_refresh(actor="test", promote=lambda version, reason: admin.promote(version, "test", reason))

    assert outcome.status == RunStatus.SUCCEEDED and outcome.promoted, outcome
    assert outcome.gate.passed and outcome.gate.candidate.chrf > outcome.gate.live.chrf
    with session_scope() as session:
        assert live_adapter(session).version == outcome.candidate
        run = session.get(TrainingRun, outcome.run_id)
    assert run.kind == "refresh" and run.step == "done" and run.adapter_version == outcome.candidate
    for step in ("export", "train", "evaluate", "gate", "swap"):
        assert f"] {step}:" in run.log
    answer = service.client("agent").post(
        "/v1/chat/completions",
        json={"model": settings.public_model_name, "messages": [{"role": "user", "content": SEED_QUESTION}],
              "temperature": 0, "max_tokens": 80},
    ).json()
    assert CHRF().sentence_score(answer["choices"][0]["message"]["content"], [SEED_REPLY]).score >= 90
    assert outcome.candidate in answer["system_fingerprint"]


@pytest.mark.slow
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the Postgres path is covered by the swap test
def test_gate_refuses_a_candidate_trained_on_shuffled_replies_and_one_refresh_runs_at_a_time(
    loop_settings, gadgetcorp_adapter
) -> None:
    # the good adapter is live; then someone's bad data arrives: every agent reply shuffled to another conversation
    with session_scope() as session:
        register_adapter(session, version="v-good", path=str(gadgetcorp_adapter.path), base_model=str(
            gadgetcorp_adapter.base), rank=16)
        set_status(session, "v-good", AdapterStatus.LIVE, action="promote", actor="test")
        replies = session.execute(select(Message).where(Message.role == Role.ASSISTANT)).scalars().all()
        texts = [message.content for message in replies]
        random.Random(0).shuffle(texts)
        finals = {message.draft_id: text for message, text in zip(replies, texts)}
        for message in replies:
            message.content = finals[message.draft_id]
        for review in session.execute(select(Review)).scalars():
            if review.draft_id in finals:
                review.final_text = finals[review.draft_id]
    promoted: list[str] = []
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(outcome=run_refresh(
        actor="test", promote=lambda version, reason: promoted.append(version))))
    worker.start()
    deadline = time.monotonic() + 60
    while current_holder(REFRESH_LOCK) is None and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(ConflictError, match="already running"):
        run_refresh(actor="second caller")
    worker.join(900)

    outcome = result["outcome"]
    assert outcome.status == RunStatus.SUCCEEDED and not outcome.promoted and promoted == []
    assert not outcome.gate.passed and "v-good" in outcome.gate.reason
    with session_scope() as session:
        assert live_adapter(session).version == "v-good"
        assert get_adapter(session, outcome.candidate).status == AdapterStatus.CANDIDATE
        refused = session.execute(select(AdapterEvent).where(AdapterEvent.action == "gate-refused")).scalar_one()
        assert refused.version == outcome.candidate and refused.reason == outcome.gate.reason
        assert session.execute(select(func.count()).select_from(TrainingRun).where(
            TrainingRun.kind == "refresh")).scalar() == 1


def replay_reviews(version: str, *, approved: int, edited: int) -> None:
    """Agents' reviews of `version`'s drafts, as the review queue would record them."""
    with session_scope() as session:
        for index in range(approved + edited):
            conversation = recorder.start_conversation(session)
            recorder.add_message(session, conversation.id, Role.USER, f"question {index}")
            draft = recorder.record_draft(session, conversation.id, "a draft", adapter_version=version)
            if index < approved:
                recorder.record_review(session, draft.id, "approved", agent_id="agent")
            else:
                recorder.record_review(session, draft.id, "edited", agent_id="agent", final_text="a better reply")


@pytest.mark.vllm
def test_a_version_that_makes_agents_correct_more_is_rolled_back_automatically(
    serving_settings, lora_adapters, vllm_server
) -> None:
    from tests.fixtures.vllm import register_adapter_folder

    first = register_adapter_folder(lora_adapters["other"], vllm_server.base_model)
    second = register_adapter_folder(lora_adapters["retrained"], vllm_server.base_model)

    async def scenario() -> None:
        gateway = ServingGateway(get_settings())
        await gateway.start()
        try:
            await gateway.promote(first, actor="test")
            replay_reviews(first, approved=45, edited=5)
            await gateway.promote(second, actor="test")
            scheduler = LoopScheduler(get_settings(), gateway)
            replay_reviews(second, approved=20, edited=4)
            await scheduler.guard_live_version()  # 17% vs 10%: not worse by more than the 5% margin
            assert gateway.status().live == second
            replay_reviews(second, approved=0, edited=26)
            await scheduler.guard_live_version()
            assert gateway.status().live == first
        finally:
            await gateway.stop()

    asyncio.run(scenario())
    with session_scope() as session:
        assert live_adapter(session).version == first
        rollback = session.execute(
            select(AdapterEvent).where(AdapterEvent.action == "rollback").order_by(AdapterEvent.id.desc())
        ).scalars().first()
    assert rollback.actor == "auto-rollback" and "z=" in rollback.reason and second in rollback.reason
    assert check_live_regression(get_settings()) is None  # a rollback is never undone automatically


def test_regression_check_needs_enough_reviews_before_any_verdict(store_url: str) -> None:
    with session_scope() as session:
        for version in ("v1", "v2"):
            register_adapter(session, version=version, path=f"/adapters/{version}", base_model="base", rank=8)
        set_status(session, "v1", AdapterStatus.LIVE, action="promote")
        set_status(session, "v1", AdapterStatus.RETIRED, action="retire")
        set_status(session, "v2", AdapterStatus.LIVE, action="promote")
    replay_reviews("v1", approved=10, edited=0)
    replay_reviews("v2", approved=0, edited=10)
    check = check_live_regression(get_settings())
    assert check.previous == "v1" and not check.test.regressed and not check.test.enough_reviews


def test_stats_command_shows_each_versions_acceptance_and_edit_rate(store_url: str) -> None:
    replay_reviews("v7", approved=3, edited=1)
    with session_scope() as session:
        (row,) = version_stats(session, since=None)
    assert (row.version, row.reviews, row.acceptance_rate, row.edit_rate) == ("v7", 4, 0.75, 0.25)
    result = CliRunner().invoke(app, ["stats"])
    assert result.exit_code == 0, result.output
    assert "v7" in result.output and "75%" in result.output and "25%" in result.output
