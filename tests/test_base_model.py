"""The tiny base model: builds offline, loads like a hub model, answers generically, same seed → same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoTokenizer

from core.errors import ConflictError
from core.settings import Settings
from trainer.base_model import TinyBaseConfig, build_tiny_base, generic_conversations, read_sample
from trainer.generate import generate_reply
from trainer.model_loading import weights_hash


def test_tiny_base_is_a_complete_chat_model_folder(tiny_base: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tiny_base / name).is_file(), name
    template = json.loads((tiny_base / "tokenizer_config.json").read_text())["chat_template"]
    assert "{% generation %}" in template
    config = AutoConfig.from_pretrained(tiny_base)
    assert config.model_type == "llama"
    assert config.hidden_size // config.num_attention_heads == 64  # vLLM's CPU attention supports head_dim 64
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    assert 1000 < len(tokenizer) <= 4096


def test_base_is_pretrained_on_generic_text_only() -> None:
    records = read_sample()
    finals = {t["content"] for r in records for t in r["messages"] if t["role"] == "assistant" and t["content"]}
    generic = [c[-1]["content"] for c in generic_conversations(records, "system")]
    assert generic and not finals & set(generic)


def test_base_answers_like_a_generic_assistant(tiny_base: Path) -> None:
    reply = generate_reply(tiny_base, "My SuperWidget is dead.", settings=Settings())
    assert reply and "I'm sorry to hear" not in reply and "GadgetCorp Team" not in reply


def test_same_seed_builds_the_same_base(tmp_path: Path) -> None:
    quick = TinyBaseConfig(pretrain_epochs=1, vocab_size=600)
    first = build_tiny_base(tmp_path / "a", quick, settings=Settings())
    second = build_tiny_base(tmp_path / "b", quick, settings=Settings())
    other = build_tiny_base(tmp_path / "c", quick.model_copy(update={"seed": 1}), settings=Settings())
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    assert weights_hash(first) == weights_hash(second) != weights_hash(other)


def test_base_build_never_overwrites_a_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match="choose a new --out"):
        build_tiny_base(tmp_path / "taken", TinyBaseConfig(pretrain_epochs=1), settings=Settings())
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
