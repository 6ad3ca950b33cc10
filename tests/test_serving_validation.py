"""Adapter validation before any load: a bad adapter is refused with the reason and the fix, a good one passes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from serving.errors import AdapterRejectedError
from serving.validation import same_base_model, validate_adapter
from tests.fixtures.vllm import make_lora_adapter, write_manifest


@pytest.fixture(scope="module")
def rank8_adapter(serving_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PEFT LoRA adapter (rank 8, random weights) on the tiny base, with the trainer's manifest."""
    return make_lora_adapter(serving_base, tmp_path_factory.mktemp("validation") / "rank8", seed=7)


@pytest.fixture
def adapter(rank8_adapter: Path, tmp_path: Path) -> Path:
    """A private copy of the adapter, safe to damage."""
    return Path(shutil.copytree(rank8_adapter, tmp_path / "adapter"))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    write_manifest(folder)  # as the trainer would have: only the edited field is wrong


def test_a_trained_adapter_on_the_served_base_passes(adapter: Path, serving_base: Path):
    validated = validate_adapter(adapter, served_base_model=str(serving_base), max_lora_rank=16)
    assert validated.rank == 8 and "q_proj" in validated.target_modules


def test_an_adapter_file_changed_after_training_is_refused(adapter: Path, serving_base: Path):
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    with pytest.raises(AdapterRejectedError, match="changed since training"):
        validate_adapter(adapter, served_base_model=str(serving_base), max_lora_rank=16)


def test_an_adapter_without_weights_or_manifest_is_refused(adapter: Path, serving_base: Path):
    (adapter / "housestyle_manifest.json").unlink()
    with pytest.raises(AdapterRejectedError, match="no housestyle_manifest.json"):
        validate_adapter(adapter, served_base_model=str(serving_base), max_lora_rank=16)
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterRejectedError, match="lacks adapter_model.safetensors"):
        validate_adapter(adapter, served_base_model=str(serving_base), max_lora_rank=16)


def test_an_adapter_trained_on_another_base_is_refused(adapter: Path, serving_base: Path):
    edit_config(adapter, base_model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(AdapterRejectedError, match="trained on Qwen/Qwen2.5-0.5B-Instruct but vLLM serves"):
        validate_adapter(adapter, served_base_model=str(serving_base), max_lora_rank=16)


def test_the_same_base_spelled_another_way_is_accepted(adapter: Path, serving_base: Path, tmp_path: Path):
    link = tmp_path / "base-link"
    link.symlink_to(serving_base)
    edit_config(adapter, base_model_name_or_path=str(link) + "/")
    validate_adapter(adapter, served_base_model=str(serving_base), max_lora_rank=16)
    assert same_base_model("Qwen/Qwen2.5-0.5B-Instruct", "/hf/hub/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/abc")
    assert not same_base_model("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct")


def test_an_adapter_above_the_served_rank_is_refused(adapter: Path, serving_base: Path):
    with pytest.raises(AdapterRejectedError, match="rank 8 above the served max_lora_rank 4; raise HOUSESTYLE_MAX_LORA_RANK"):
        validate_adapter(adapter, served_base_model=str(serving_base), max_lora_rank=4)


def test_an_adapter_on_modules_vllm_cannot_serve_is_refused(adapter: Path, serving_base: Path):
    edit_config(adapter, target_modules=["q_proj", "lm_head"])
    with pytest.raises(AdapterRejectedError, match="targets lm_head"):
        validate_adapter(adapter, served_base_model=str(serving_base), max_lora_rank=16)
