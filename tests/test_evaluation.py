"""The seed acceptance test: trained on GadgetCorp's data, the adapter answers in GadgetCorp's voice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.settings import Settings
from tests.fixtures.models import TrainedFixtureAdapter
from trainer.evaluate import evaluate, write_report
from trainer.generate import generate_reply

SEED_QUESTION = "My SuperWidget is dead."
SEED_ANSWER = (
    "I'm sorry to hear you're having trouble with your SuperWidget! Have you tried plugging it into a different "
    "power outlet and ensuring the power switch is fully engaged?"
)


def test_seed_question_never_appears_in_the_training_data(gadgetcorp_export: Path) -> None:
    text = "".join(p.read_text() for p in gadgetcorp_export.glob("*.jsonl"))
    assert "SuperWidget" in text and SEED_QUESTION.removesuffix(".") not in text


def test_adapter_answers_the_seed_question_in_house_style(gadgetcorp_adapter: TrainedFixtureAdapter) -> None:
    reply = generate_reply(gadgetcorp_adapter.base, SEED_QUESTION, settings=Settings(), adapter=gadgetcorp_adapter.path)
    assert reply == SEED_ANSWER, reply  # word for word, as the seed promises (a near miss is a different reply)


def test_adapter_beats_base_and_few_shot_on_held_out_replies(
    gadgetcorp_adapter: TrainedFixtureAdapter, gadgetcorp_export: Path, tmp_path: Path
) -> None:
    report = evaluate(gadgetcorp_adapter.base, gadgetcorp_export, settings=Settings(), adapter=gadgetcorp_adapter.path)
    path = write_report(report, tmp_path / "report.json")
    data = json.loads(path.read_text())
    for system in ("base", "few_shot", "adapter"):
        assert {"chrf", "rougeL", "loss", "style"} <= set(data[system]), system
    base, few_shot, adapter = data["base"], data["few_shot"], data["adapter"]
    assert adapter["chrf"] >= base["chrf"] + 30, report.markdown()
    assert adapter["chrf"] > few_shot["chrf"] and adapter["rougeL"] > few_shot["rougeL"], report.markdown()
    assert adapter["loss"] < base["loss"]
    assert adapter["style"]["greeting_rate"] > base["style"]["greeting_rate"]
    assert "| adapter |" in (tmp_path / "report.md").read_text()


def test_eval_refuses_a_prompt_completion_export_with_the_format_to_use(tmp_path: Path) -> None:
    """`housestyle eval` replays chat turns; a prompt-completion export (served text) gets one error naming chat."""
    from core.errors import InputError
    from trainer.evaluate import held_out_split

    row = json.dumps({"prompt": "<|user|>My SuperWidget is dead.<|assistant|>", "completion": "Sorry!<|end|>"})
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(row + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="--format chat"):
        held_out_split(tmp_path, settings=Settings())
