"""The real base, end to end: SmolLM2 built from the package, a LoRA trained on it, served by real vLLM.

Kept to a small subset and one epoch (a couple of minutes on 2 cores) so the real path cannot rot; the full-sample
quality figures (seed reply, held-out chrF) are bench/smollm2_quality.py's job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.settings import Settings
from tests.fixtures.models import TrainedFixtureAdapter, train_adapter
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


def test_smollm2_base_builds_offline_with_its_preset_and_checksums(smollm2_base: Path) -> None:
    card = read_card(smollm2_base)
    assert card is not None and card.model == "smollm2" and card.preset == "small"
    assert card.weights_sha256 == weights_hash(smollm2_base)
    config = json.loads((smollm2_base / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert build_base("smollm2", smollm2_base, settings=Settings()) == (smollm2_base, False)  # idempotent


def test_adapter_trained_on_smollm2_serves_through_vllm_as_it_answers_in_training(
    smollm2_base: Path, smollm2_adapter: TrainedFixtureAdapter
) -> None:
    from core.prompts import USER, build_messages
    from serving.batch import vllm_replies
    from trainer.generate import LoadedModels, TransformersReplies

    manifest = json.loads((smollm2_adapter.path / "housestyle_manifest.json").read_text())
    assert manifest["hyperparameters"]["preset"] == "small" and manifest["metrics"]["memory"]["peak_mib"] > 0
    settings = Settings(home=smollm2_adapter.path.parent / "vllm-home", vllm_extra_args="--max-model-len 2048")
    prompts = [build_messages(settings.system_prompt, [(USER, text)]) for text in PROMPTS]
    local = TransformersReplies(LoadedModels(smollm2_base, settings))
    with vllm_replies(settings, base=smollm2_base) as served:
        served_base = served.replies(prompts, adapter=None, max_new_tokens=48)
        served_adapter = served.replies(prompts, adapter=smollm2_adapter.path, max_new_tokens=48)
    trained_adapter = local.replies(prompts, adapter=smollm2_adapter.path, max_new_tokens=48)
    assert all(served_base) and all(served_adapter)
    assert served_adapter != served_base  # the adapter is applied at runtime
    # served and trained prompts are the same tokens: greedy replies agree (vLLM's CPU kernels may round a late
    # token differently, so the first words are compared)
    for served_reply, local_reply in zip(served_adapter, trained_adapter, strict=True):
        assert served_reply.split()[:6] == local_reply.split()[:6], (served_reply, local_reply)
