"""The real base, end to end: SmolLM2 built from the package, a LoRA trained on it, served by real vLLM, and an
agent's edit reaching the next similar customer's draft through answer memory before any refresh.

Kept to a small subset and one epoch (a couple of minutes on 2 cores) so the real path cannot rot; the full-sample
quality figures (seed reply, held-out chrF) are bench/smollm2_quality.py's job. One vLLM on SmolLM2 serves the
module.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import Review
from core.settings import Settings, get_settings
from serving.vllm_server import VllmServer
from tests.fixtures.models import TrainedFixtureAdapter, train_adapter
from tests.fixtures.service import RunningService, start_widget_conversation
from tests.fixtures.vllm import RunningVllm
from trainer.base_card import read_card
from trainer.base_model import build_base
from trainer.model_loading import weights_hash

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
SUBSET = 40  # training conversations
PROMPTS = ["My SuperWidget is dead.", "Where is my UltraHub?", "Can I return my MegaGadget?"]


@pytest.fixture(scope="module")
def small_export(gadgetcorp_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first conversations of the sample's train split: a quick one-epoch run still changes the voice."""
    folder = tmp_path_factory.mktemp("exports") / "subset"
    folder.mkdir()
    lines = (gadgetcorp_export / "train.jsonl").read_text().splitlines()[:SUBSET]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def smollm2_adapter(smollm2_base: Path, small_export: Path, tmp_path_factory: pytest.TempPathFactory
                    ) -> TrainedFixtureAdapter:
    # no preset given: the base's card picks "small"
    return train_adapter(smollm2_base, small_export, tmp_path_factory.mktemp("adapters") / "smollm2",
                         preset=None, epochs=1, batch_size=2)


@pytest.fixture(scope="module")
def smollm2_vllm(smollm2_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningVllm]:
    """One real vLLM (CPU, runtime LoRA on) serving SmolLM2 for this module's tests."""
    settings = Settings(home=tmp_path_factory.mktemp("smollm2-vllm"), base_model=str(smollm2_base), max_lora_rank=16,
                        vllm_extra_args="--max-model-len 2048")
    server = VllmServer(settings, api_key=secrets.token_hex(16))
    asyncio.run(server.start())
    yield RunningVllm(server=server, base_model=smollm2_base)
    server.kill()


def test_smollm2_base_builds_offline_with_its_preset_and_checksums(smollm2_base: Path) -> None:
    card = read_card(smollm2_base)
    assert card is not None and card.model == "smollm2" and card.preset == "small"
    assert card.weights_sha256 == weights_hash(smollm2_base)
    config = json.loads((smollm2_base / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert build_base("smollm2", smollm2_base, settings=Settings()) == (smollm2_base, False)  # idempotent


def test_adapter_trained_on_smollm2_serves_through_vllm_as_it_answers_in_training(
    smollm2_base: Path, smollm2_adapter: TrainedFixtureAdapter, smollm2_vllm: RunningVllm
) -> None:
    from core.prompts import USER, build_messages
    from serving.batch import vllm_replies
    from trainer.generate import LoadedModels, TransformersReplies

    manifest = json.loads((smollm2_adapter.path / "housestyle_manifest.json").read_text())
    assert manifest["hyperparameters"]["preset"] == "small" and manifest["metrics"]["memory"]["peak_mib"] > 0
    settings = Settings(home=smollm2_adapter.path.parent / "vllm-home", vllm_extra_args="--max-model-len 2048")
    prompts = [build_messages(settings.system_prompt, [(USER, text)]) for text in PROMPTS]
    local = TransformersReplies(LoadedModels(smollm2_base, settings))
    with vllm_replies(settings, base=smollm2_base, url=smollm2_vllm.url, api_key=smollm2_vllm.api_key) as served:
        served_base = served.replies(prompts, adapter=None, max_new_tokens=48)
        served_adapter = served.replies(prompts, adapter=smollm2_adapter.path, max_new_tokens=48)
    trained_adapter = local.replies(prompts, adapter=smollm2_adapter.path, max_new_tokens=48)
    assert all(served_base) and all(served_adapter)
    assert served_adapter != served_base  # the adapter is applied at runtime
    # served and trained prompts are the same tokens: greedy replies agree (vLLM's CPU kernels may round a late
    # token differently, so the first words are compared)
    for served_reply, local_reply in zip(served_adapter, trained_adapter, strict=True):
        assert served_reply.split()[:6] == local_reply.split()[:6], (served_reply, local_reply)


FIRST_QUESTION = "Is my SuperWidget still under warranty? I bought it in 2023."
NEW_FACT = "Good news: every SuperWidget now carries a 7-year warranty, and a replacement ships free within 48 hours."
OTHER_WORDS = "how long is the warranty on a superwidget??"
CARRIES_FACT = re.compile(r"\b7[- ]year|\b48 hours")


def test_an_agents_edit_reaches_the_next_similar_customers_draft_before_any_refresh(
    smollm2_vllm: RunningVllm, housestyle_home: Path, start_service: Callable[..., RunningService]
) -> None:
    """Issue 26, learning between refreshes: an agent rewrites a draft with a new fact; a second customer asks the
    same thing in other words, and the draft the base model writes for them (no adapter, no refresh) carries the
    fact, because answer memory put the agent's reply into its prompt. Catches: memory left out of the reply
    path's prompt, raw (unredacted) text required, or recall reading a stale index."""
    from serving.gateway import ServingGateway

    overrides = dict(vllm_urls=smollm2_vllm.url, vllm_api_key=smollm2_vllm.api_key,
                     base_model=str(smollm2_vllm.base_model), max_lora_rank=16, default_reply_mode="assist",
                     memory_examples=1, reply_max_tokens=64, redact_interval_s=0.5,
                     memory_min_score=0.1)  # one exchange in the store: every word's BM25 idf is log(4/3)
    settings = get_settings().model_copy(update=overrides)
    service = start_service(gateway=ServingGateway(settings, database_url=settings.resolved_database_url), **overrides)
    widget, agent = service.client("widget"), service.client("agent")

    def draft_for(question: str) -> dict:
        """A new customer asks `question`; the draft the agent sees for it (the newest, when asked before)."""
        start_widget_conversation(widget, channel="web", mode="assist").send(question).raise_for_status()
        return max((item for item in agent.get("/reviews/queue").json() if item["context"][-1]["content"] == question),
                   key=lambda item: item["draft_id"])

    before = draft_for(OTHER_WORDS)  # the base alone does not know the new warranty
    assert not CARRIES_FACT.search(before["draft"]), before["draft"]
    first = draft_for(FIRST_QUESTION)
    agent.post(f"/reviews/{first['draft_id']}/claim", json={}).raise_for_status()
    agent.post(f"/reviews/{first['draft_id']}/edit", json={"final_text": NEW_FACT}).raise_for_status()

    # two waits, each on its own cause. The service's redaction worker (every 0.5 s) must first redact the edit: memory
    # never holds raw text. Its first run loads the NER model, minutes on a busy 2-core CI machine, so that wait is
    # generous and is the environment's. Memory must then take the redacted exchange promptly: that wait is the
    # product's, and short.
    redacted_by = time.monotonic() + 600
    while not _is_redacted(service, first["draft_id"]) and time.monotonic() < redacted_by:
        time.sleep(0.5)
    assert _is_redacted(service, first["draft_id"]), "the redaction worker never redacted the agent's edit"
    deadline = time.monotonic() + 30
    while True:
        after = draft_for(OTHER_WORDS)  # a new customer each try
        leaned_on = [example["reply"] for example in after.get("recalled") or []]
        if NEW_FACT in leaned_on or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert NEW_FACT in leaned_on, after  # the console shows the past reply the draft leaned on
    assert CARRIES_FACT.search(after["draft"]), after["draft"]


def _is_redacted(service: RunningService, draft_id: int) -> bool:
    """Whether the review of `draft_id` has its redacted text (what answer memory waits for)."""
    with session_scope(service.app.state.settings.resolved_database_url) as session:
        return session.scalar(select(Review.redacted_final_text).where(Review.draft_id == draft_id)) is not None
