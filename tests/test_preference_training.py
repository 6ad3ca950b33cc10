"""Learning from what agents changed: DPO and KTO on top of the SFT adapter raise the agent's text over the draft
it replaced on held-out pairs, and the result is one servable adapter registered as a candidate."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlmodel import select

from collector.export import ExportOptions, export_dataset
from core import db
from core.errors import InputError
from core.models import AdapterVersion
from core.settings import get_settings
from plugin.loop.gate import MethodCandidate, choose_method
from tests.fixtures.stores import redact_store
from tests.test_export import conversation
from trainer.model_loading import load_tokenizer, load_with_adapter
from trainer.preference import PreferenceConfig, load_preference_export, preference_margins, train_preference
from trainer.preference_eval import score_preference
from trainer.train import train_adapter

ITEMS = ["SuperWidget", "MegaCharger", "Gizmo Pro", "SmartLamp", "AquaBottle", "EarPods", "PowerBank", "TabletX"]
ISSUES = ["will not turn on", "arrived broken", "is late", "makes a noise", "stopped charging", "lost its sound"]


def agents_enforce_a_house_style(url: str, count: int = 80) -> None:
    """Drafts that go straight to the fix; agents open every reply with an apology and close with an offer."""
    rng = random.Random(0)
    with db.session_scope(url) as session:
        for number in range(count):
            item, issue = rng.choice(ITEMS), rng.choice(ISSUES)
            conversation(session, (f"Hi, my {item} {issue}. Order {1000 + number * 37}.",
                                   f"Please restart the {item} and check the cable.", "edited",
                                   f"So sorry about your {item}! Please restart it and check the cable. "
                                   "Anything else I can do?"), external_id=f"c{number}")
    redact_store(url)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture
def edited_store(housestyle_home: Path, tmp_path: Path) -> dict[str, Path]:
    url = get_settings().resolved_database_url
    db.open_store(url)
    agents_enforce_a_house_style(url)
    folders = {}
    for fmt in ("chat", "dpo", "kto"):
        export_dataset(ExportOptions(format=fmt, out=tmp_path / fmt), settings=get_settings(), progress=False)
        folders[fmt] = tmp_path / fmt
    return folders


def test_preference_training_on_the_sft_adapter_prefers_the_agents_text(
    tiny_base: Path, edited_store: dict[str, Path], tmp_path: Path
) -> None:
    settings = get_settings()
    sft = train_adapter(tiny_base, edited_store["chat"], tmp_path / "sft", settings=settings, preset="tiny", epochs=4)
    splits = load_preference_export(edited_store["dpo"], "dpo")
    held_out = splits["validation"] + splits["test"]
    assert len(held_out) >= 5
    tokenizer = load_tokenizer(tiny_base)

    def margins(adapter: Path) -> list[float]:
        return preference_margins(load_with_adapter(tiny_base, adapter, torch.device("cpu")), tokenizer, held_out)

    before = margins(sft.path)
    scored = [MethodCandidate(method="sft", version=sft.version, preference=score_preference(
        tiny_base, sft.path, sft.version, "sft", edited_store["dpo"], settings=settings, max_new_tokens=32))]
    for method in ("dpo", "kto"):
        trained = train_preference(tiny_base, edited_store[method], tmp_path / f"{method}-adapter",
                                   PreferenceConfig(method=method, lr=5e-4, batch_size=4, max_length=256),
                                   sft_adapter=sft.path, settings=settings)
        after = margins(trained.path)
        assert mean(after) > mean(before) + 5, (method, mean(before), mean(after))
        assert sum(m > 0 for m in after) >= sum(m > 0 for m in before)
        # one adapter of the SFT adapter's shape (the frozen reference copy is not saved), registered as a candidate
        config = json.loads((trained.path / "adapter_config.json").read_text())
        sft_config = json.loads((sft.path / "adapter_config.json").read_text())
        assert (config["r"], sorted(config["target_modules"])) == (sft_config["r"], sorted(sft_config["target_modules"]))
        assert not (trained.path / "ref").exists()
        assert trained.manifest.hyperparameters["method"] == method
        assert trained.manifest.hyperparameters["sft_adapter"] == str(sft.path)
        with db.session_scope(settings.resolved_database_url) as session:
            row = session.exec(select(AdapterVersion).where(AdapterVersion.version == trained.version)).one()
            assert row.status == "candidate" and row.training_run_id is not None
        scored.append(MethodCandidate(method=method, version=trained.version, preference=score_preference(
            tiny_base, trained.path, trained.version, method, edited_store["dpo"], settings=settings, max_new_tokens=32)))
    # every candidate answered the same held-out prompts; the drafts agents saw are the same line for all
    assert len({c.preference.draft_edit_distance for c in scored}) == 1 and scored[0].preference.pairs >= 3
    assert all(c.preference.preference_accuracy >= scored[0].preference.preference_accuracy for c in scored[1:])
    choice = choose_method(scored)
    eligible = [c for c in scored if c.method == "sft" or c.preference.edit_distance
                <= scored[0].preference.edit_distance - 0.01]
    assert choice.winner.preference.edit_distance == min(c.preference.edit_distance for c in eligible)
    assert all(c.method in choice.reason for c in scored)


def test_preference_training_refuses_the_wrong_export(tiny_base: Path, edited_store: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="--format dpo"):
        train_preference(tiny_base, edited_store["kto"], None, PreferenceConfig(method="dpo"), settings=get_settings())
    with pytest.raises(InputError, match="--format kto"):
        train_preference(tiny_base, edited_store["chat"], None, PreferenceConfig(method="kto"), settings=get_settings())


def test_cli_trains_dpo_and_keeps_sft_the_default(tiny_base: Path, edited_store: dict[str, Path], tmp_path: Path) -> None:
    housestyle = Path(sys.executable).parent / "housestyle"
    env = {**os.environ, "HOUSESTYLE_CPU_THREADS": "1"}
    done = subprocess.run(
        [str(housestyle), "train", "--method", "dpo", "--base", str(tiny_base), "--data", str(edited_store["dpo"]),
         "--out", str(tmp_path / "dpo-adapter"), "--lr", "5e-4", "--batch-size", "4", "--max-length", "256"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    version = done.stdout.strip().splitlines()[-1]
    assert version.startswith("v") and "dpo" in done.stdout.splitlines()[0]
    bad = subprocess.run(
        [str(housestyle), "train", "--method", "kto", "--base", str(tiny_base), "--data", str(edited_store["chat"])],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: --method kto needs an export made with")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_refresh_second_candidate_is_trained_and_the_method_chosen(
    tiny_base: Path, edited_store: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.models import TrainingRun
    from core.runs import RunLog
    from plugin.loop.methods import method_candidates

    monkeypatch.setenv("HOUSESTYLE_EVAL_ENGINE", "transformers")
    monkeypatch.setenv("HOUSESTYLE_REFRESH_EVAL_LIMIT", "4")
    monkeypatch.setenv("HOUSESTYLE_PREFERENCE_MIN_PAIRS", "500")
    get_settings.cache_clear()
    settings = get_settings()
    url = settings.resolved_database_url
    data = tmp_path / "refresh-0001"
    export_dataset(ExportOptions(format="chat", out=data), settings=settings, progress=False)
    sft = train_adapter(tiny_base, data, tmp_path / "sft", settings=settings, preset="tiny", epochs=4)
    run = RunLog(url, kind="refresh", params={}, step="train")
    # too few pairs for a preference candidate: SFT goes on alone, and the log says why
    assert method_candidates(settings, str(tiny_base), sft, data, run, brand_id=1) is None
    monkeypatch.setenv("HOUSESTYLE_PREFERENCE_MIN_PAIRS", "20")
    get_settings.cache_clear()
    choice, winner = method_candidates(get_settings(), str(tiny_base), sft, data, run, brand_id=1)
    assert [c.method for c in choice.candidates] == ["sft", "dpo"]
    assert (winner == sft.path) == (choice.winner.method == "sft")
    assert (winner / "adapter_config.json").is_file() and choice.candidates[0].preference.pairs == 4
    # each candidate is scored on the brand's golden set, so HOUSESTYLE_GATE_GOLDEN_TOLERANCE can refuse one (the
    # rule itself: tests/test_method_choice.py); catches `golden_chrf=golden_chrf(...)` dropped in method_candidates
    assert all(c.golden_chrf is not None and 0 < c.golden_chrf <= 100 for c in choice.candidates), choice.candidates
    assert choice.reason.count("golden-set chrF") >= 2
    with db.session_scope(url) as session:
        log = session.get(TrainingRun, run.run_id).log
    assert "fewer than HOUSESTYLE_PREFERENCE_MIN_PAIRS=500: SFT only" in log
    assert "dpo on top of " + sft.version in log and "method: " + choice.winner.method + " wins" in log

    # HOUSESTYLE_PREFERENCE_METHOD=kto: the refresh exports labelled examples beside the pairs and trains kto on them
    # (catches the kto export skipped: KTO would be handed DPO pairs and refuse them)
    monkeypatch.setenv("HOUSESTYLE_PREFERENCE_METHOD", "kto")
    get_settings.cache_clear()
    choice, winner = method_candidates(get_settings(), str(tiny_base), sft, data, run, brand_id=1)
    assert [c.method for c in choice.candidates] == ["sft", "kto"]
    assert (data.with_name(f"{data.name}-kto") / "train.jsonl").is_file()
    assert (winner / "adapter_config.json").is_file()
    assert all(c.golden_chrf is not None for c in choice.candidates)
    with db.session_scope(url) as session:
        assert "kto on top of " + sft.version in session.get(TrainingRun, run.run_id).log
