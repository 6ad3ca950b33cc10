"""The refresh: agents correct drafts, a refresh trains and gates a candidate, and the verdict is applied for real."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest
from sacrebleu.metrics import CHRF
from sqlalchemy import func, select

from collector.importer import import_file
from collector.knowledge import PRODUCT_SHEET_PATH, add_document
from collector.sample import SAMPLE_PATH
from core.db import session_scope
from core.errors import ConflictError
from core.locks import current_holder
from core.models import AdapterEvent, AdapterStatus, Message, Review, Role, RunStatus, TrainingRun
from core.registry import get_adapter, live_adapter, register_adapter, set_status
from core.settings import Settings, get_settings
from plugin.loop.decision import RemoteSwapper
from plugin.loop.refresh import REFRESH_LOCK, run_refresh
from serving.control import ControlFile, write_control_file
from serving.gateway import ServingGateway
from tests.fixtures.service import start_widget_conversation

SEED_QUESTION = "My SuperWidget is dead."
SEED_REPLY = (
    "I'm sorry to hear you're having trouble with your SuperWidget! Have you tried plugging it into a different "
    "power outlet and ensuring the power switch is fully engaged?"
)


QUICK_TRAINING = {"epochs": 6}  # for refreshes whose test is about the verdict, not the learnt voice


class RecordingSwapper:
    """A Swapper that only records what it was asked (for refreshes whose verdict must not reach serving)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def promote(self, version: str, *, actor: str, reason: str) -> None:
        self.calls.append(("promote", version))

    def canary(self, version: str, share: float, *, actor: str, reason: str) -> None:
        self.calls.append(("canary", version))


@pytest.fixture
def loop_settings(store_url: str, tiny_base: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The store of this test with the sample loaded; refreshes train the tiny base."""
    monkeypatch.setenv("HOUSESTYLE_BASE_MODEL", str(tiny_base))
    monkeypatch.setenv("HOUSESTYLE_TRAIN_PRESET", "tiny")
    monkeypatch.setenv("HOUSESTYLE_REFRESH_EVAL_LIMIT", "32")
    get_settings.cache_clear()
    import_file(SAMPLE_PATH, url=store_url, source="sample")
    return get_settings()


def agent_corrects(service, customer: str, house_reply: str) -> str:
    """A customer writes in assist mode and an agent edits the draft into the house reply; returns the draft."""
    widget, agent = service.client("widget"), service.client("agent")
    sent = start_widget_conversation(widget, channel="web", mode="assist").send(customer)
    assert sent.status_code == 200, sent.text
    draft = next(d for d in agent.get("/reviews/queue").json() if d["context"][-1]["content"] == customer)
    edited = agent.post(f"/reviews/{draft['draft_id']}/edit", json={"final_text": house_reply})
    assert edited.status_code == 200, edited.text
    return draft["draft"]


def running_service_swapper(service, settings: Settings) -> RemoteSwapper:
    """What `housestyle refresh` uses: the running service on this HOME, found through its control file."""
    write_control_file(settings, ControlFile(pid=os.getpid(), url=service.url,
                                             control_token="test-control-token"))
    return RemoteSwapper(settings)


def seed_answer(service, settings: Settings) -> dict:
    return service.client("agent").post(
        "/v1/chat/completions",
        json={"model": settings.public_model_name, "messages": [{"role": "user", "content": SEED_QUESTION}],
              "temperature": 0, "max_tokens": 80},
    ).json()


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_refresh_promotes_a_candidate_that_answers_in_the_house_style(
    loop_settings, serving_settings, start_service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sample's edited and rejected drafts are enough preference pairs: an SFT+DPO candidate is trained beside
    # the SFT one, both answer the held-out pairs through the service's vLLM, and the gate gets the nearer one
    monkeypatch.setenv("HOUSESTYLE_PREFERENCE_MIN_PAIRS", "20")
    get_settings.cache_clear()
    settings = get_settings()
    service = start_service(gateway=ServingGateway(settings, database_url=settings.resolved_database_url))
    assert agent_corrects(service, "Hi, my MegaGadget won't charge at all.",
                          "I'm sorry to hear you're having trouble with your MegaGadget! Please try a different "
                          "USB-C cable and charger.")

    outcome = run_refresh(settings, running_service_swapper(service, settings), actor="test")

    assert outcome.status == RunStatus.SUCCEEDED and outcome.applied.action == "promote", outcome
    assert outcome.gate.passed and outcome.gate.candidate.chrf > outcome.gate.live.chrf
    with session_scope(settings.resolved_database_url) as session:
        assert live_adapter(session).version == outcome.candidate
        run = session.get(TrainingRun, outcome.run_id)
    assert run.kind == "refresh" and run.step == "done" and run.adapter_version == outcome.candidate
    for step in ("export", "train", "evaluate", "gate", "swap"):
        assert f"] {step}:" in run.log
    method = run.metrics["method"]
    assert [c["method"] for c in method["candidates"]] == ["sft", "dpo"] and "dpo on top of " in run.log
    assert method["winner"]["version"] == outcome.candidate and method["reason"] in run.log
    assert all(c["preference"]["pairs"] > 0 for c in method["candidates"])
    answer = seed_answer(service, settings)
    assert CHRF().sentence_score(answer["choices"][0]["message"]["content"], [SEED_REPLY]).score >= 90
    assert outcome.candidate in answer["system_fingerprint"]


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_refresh_with_a_canary_share_starts_the_winner_as_a_canary(
    loop_settings, serving_settings, start_service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOUSESTYLE_REFRESH_CANARY_SHARE", "0.2")
    get_settings.cache_clear()
    settings = get_settings()
    service = start_service(gateway=ServingGateway(settings, database_url=settings.resolved_database_url))

    # a quarter of the tiny preset's epochs beats the bare base by far: this test is about where the winner goes
    # (the promote test above trains the whole preset and checks the voice)
    outcome = run_refresh(settings, running_service_swapper(service, settings), actor="test",
                          train_overrides=QUICK_TRAINING)

    assert outcome.status == RunStatus.SUCCEEDED and outcome.gate.passed, outcome
    assert outcome.applied.action == "canary" and outcome.applied.share == 0.2
    serving = service.client("admin").get("/admin/adapters").json()["serving"]
    assert (serving["live"], serving["canary"], serving["canary_share"]) == (None, outcome.candidate, 0.2)
    with session_scope(settings.resolved_database_url) as session:
        adapter = get_adapter(session, outcome.candidate)
        run = session.get(TrainingRun, outcome.run_id)
    assert adapter.status == AdapterStatus.CANARY and adapter.canary_share == 0.2
    assert "canary for 20% of new conversations" in run.log
    fingerprints = {seed_answer(service, settings)["system_fingerprint"] for _ in range(12)}
    assert fingerprints <= {"housestyle:base", f"housestyle:{outcome.candidate}"}


@pytest.mark.slow
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_gate_refuses_a_candidate_trained_on_shuffled_replies_and_one_refresh_runs_at_a_time(
    loop_settings, gadgetcorp_adapter
) -> None:
    url = loop_settings.resolved_database_url
    # the good adapter is live; then someone's bad data arrives: every agent reply shuffled to another conversation
    with session_scope(url) as session:
        add_document(session, PRODUCT_SHEET_PATH, settings=loop_settings)  # the coverage report names the products
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
    swapper = RecordingSwapper()
    result: dict = {}
    # shuffled replies fail the gate however long they are trained: a quarter of the tiny preset's epochs will do
    worker = threading.Thread(target=lambda: result.update(
        outcome=run_refresh(loop_settings, swapper, actor="test", train_overrides=QUICK_TRAINING)))
    worker.start()
    deadline = time.monotonic() + 60
    while current_holder(REFRESH_LOCK, url=url) is None and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(ConflictError, match="already running"):
        run_refresh(loop_settings, swapper, actor="second caller")
    worker.join(900)

    outcome = result["outcome"]
    assert outcome.status == RunStatus.SUCCEEDED and not outcome.promoted and swapper.calls == []
    assert not outcome.gate.passed and "v-good" in outcome.gate.reason
    with session_scope(url) as session:
        assert live_adapter(session).version == "v-good"
        assert get_adapter(session, outcome.candidate).status == AdapterStatus.CANDIDATE
        refused = session.execute(select(AdapterEvent).where(AdapterEvent.action == "gate-refused")).scalar_one()
        assert refused.version == outcome.candidate and refused.reason == outcome.gate.reason
        assert session.execute(select(func.count()).select_from(TrainingRun).where(
            TrainingRun.kind == "refresh")).scalar() == 1
        run = session.get(TrainingRun, outcome.run_id)
    # the coverage of the candidate's own training data is recorded beside the gate, with its gaps in the log
    coverage = run.metrics["coverage"]
    assert coverage["export_dir"] == str(loop_settings.exports_dir / f"refresh-{outcome.run_id:04d}")
    assert "PicoSpeaker: 0 conversations, 0 in training (need 5)" in coverage["gaps"]
    assert coverage["splits"] == run.metrics["export"]["conversations"]
    assert "] export: coverage: " in run.log and "PicoSpeaker: 0 conversations" in run.log


@pytest.mark.slow
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_private_audited_refresh_trains_sft_with_dp_and_gates_on_the_audit(
    loop_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HOUSESTYLE_TRAIN_DP_EPSILON makes the refresh's candidate a DP one (epsilon in its manifest, no preference
    method), and HOUSESTYLE_AUDIT_ON_REFRESH audits it: the verdict is in the run and decides the gate (catches the
    refresh training without DP, skipping the audit, or a gate that ignores a refused audit)."""
    monkeypatch.setenv("HOUSESTYLE_TRAIN_DP_EPSILON", "8")
    monkeypatch.setenv("HOUSESTYLE_AUDIT_ON_REFRESH", "true")
    monkeypatch.setenv("HOUSESTYLE_REFRESH_EVAL_LIMIT", "4")  # the verdict's inputs, not its quality, are tested here
    # four replies a version are generated in-process: a short-lived vLLM would cost a minute to start (the test
    # above, on shuffled replies, runs the refresh's own vLLM)
    monkeypatch.setenv("HOUSESTYLE_EVAL_ENGINE", "transformers")
    get_settings.cache_clear()
    settings = get_settings()
    swapper = RecordingSwapper()
    outcome = run_refresh(settings, swapper, actor="test", train_overrides={"epochs": 1})

    assert outcome.status == RunStatus.SUCCEEDED, outcome.error
    with session_scope(settings.resolved_database_url) as session:
        run = session.get(TrainingRun, outcome.run_id)
        candidate = get_adapter(session, outcome.candidate)
    assert candidate.manifest["hyperparameters"]["dp"]["epsilon"] <= 8.0 + 1e-6
    assert run.metrics["privacy"] == candidate.manifest["hyperparameters"]["dp"]  # the run row says the epsilon too
    assert candidate.metrics["held_out"]["correction_rate"] == outcome.gate.candidate.correction_rate
    assert "SFT only" in run.log and run.metrics["method"] is None
    audit = run.metrics["audit"]
    assert set(audit["exposure_bits"]) >= {"1", "4", "16"}
    assert ("memorisation audit" in outcome.gate.reason) is (not audit["passed"])
    assert "] audit: " in run.log
