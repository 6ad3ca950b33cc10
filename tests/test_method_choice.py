"""The gate chooses the training method: the candidate whose held-out replies are nearest what agents finally sent,
where a preference candidate must beat plain SFT by a margin; and how those held-out figures are computed."""

from __future__ import annotations

import pytest

from core.changes import edit_distance
from plugin.loop.gate import MethodCandidate, choose_method
from trainer.preference_eval import PreferenceScores, summarise


def candidate(method: str, distance: float, accuracy: float = 0.5, golden: float | None = None) -> MethodCandidate:
    return MethodCandidate(method=method, version=f"v-{method}", golden_chrf=golden, preference=PreferenceScores(
        version=f"v-{method}", method=method, pairs=20, edit_distance=distance, draft_edit_distance=0.6,
        preference_accuracy=accuracy, mean_margin=0.0))


@pytest.mark.parametrize(
    ("candidates", "tolerance", "winner", "in_reason"),
    [
        # DPO nearer the agents' texts by more than the margin: DPO
        ([candidate("sft", 0.40), candidate("dpo", 0.30)], None, "dpo", "dpo wins"),
        # nearer, but by less than the margin: plain SFT stays
        ([candidate("sft", 0.40), candidate("dpo", 0.395)], None, "sft", "dpo's held-out edit distance 0.395 is not"),
        # further away: SFT
        ([candidate("sft", 0.30), candidate("kto", 0.45)], None, "sft", "kto's held-out edit distance 0.450"),
        # the best of three
        ([candidate("sft", 0.40), candidate("dpo", 0.33), candidate("kto", 0.31)], None, "kto", "kto wins"),
        # equal distance: the higher preference accuracy
        ([candidate("sft", 0.40), candidate("dpo", 0.30, 0.6), candidate("kto", 0.30, 0.9)], None, "kto", "90%"),
        # nearer on edits but a golden-set regression beyond the tolerance: SFT
        ([candidate("sft", 0.40, golden=50), candidate("dpo", 0.20, golden=45)], 2.0, "sft",
         "golden-set chrF 45.0 regresses"),
        ([candidate("sft", 0.40, golden=50), candidate("dpo", 0.20, golden=49)], 2.0, "dpo", "dpo wins"),
        # only one method trained
        ([candidate("sft", 0.40)], None, "sft", "sft wins"),
    ],
)
def test_gate_chooses_the_method_nearest_what_agents_send(candidates, tolerance, winner, in_reason) -> None:
    choice = choose_method(candidates, golden_tolerance=tolerance)
    assert choice.winner.method == winner
    assert in_reason in choice.reason and "drafts agents saw 0.600" in choice.reason
    assert [c.method for c in choice.candidates] == [c.method for c in candidates]


def pair(chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
            "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": rejected}]}


@pytest.mark.parametrize(
    ("replies", "margins", "distance", "accuracy"),
    [
        # the version says what the agents said: distance 0
        (["Sorry! Restart it.", "Happy to help!"], [1.0, 2.0], 0.0, 1.0),
        # the version repeats the drafts: the drafts' own distance
        (["Restart it.", "Fine."], [-1.0, 0.5], None, 0.5),
    ],
)
def test_held_out_edit_distance_and_preference_accuracy(replies, margins, distance, accuracy) -> None:
    pairs = [pair("Sorry! Restart it.", "Restart it."), pair("Happy to help!", "Fine.")]
    scores = summarise("v1", "dpo", replies, pairs, margins)
    drafts = (edit_distance("Restart it.", "Sorry! Restart it.") + edit_distance("Fine.", "Happy to help!")) / 2
    assert scores.draft_edit_distance == pytest.approx(drafts)
    assert scores.edit_distance == pytest.approx(drafts if distance is None else distance)
    assert scores.preference_accuracy == accuracy and scores.pairs == 2
    assert scores.mean_margin == pytest.approx(sum(margins) / 2)
    assert "held-out edit distance" in scores.line()


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        # SFT alone (too few pairs): the demo prints no method lines
        ({"method": None}, []),
        (None, []),
        # both trained: one line per method, the winner marked
        ({"method": choose_method([candidate("sft", 0.40), candidate("dpo", 0.30)]).model_dump(mode="json")},
         ["lost  sft (v-sft): held-out edit distance 0.400", "won   dpo (v-dpo): held-out edit distance 0.300"]),
        ({"method": choose_method([candidate("sft", 0.40), candidate("kto", 0.45)]).model_dump(mode="json")},
         ["won   sft (v-sft): held-out edit distance 0.400", "lost  kto (v-kto): held-out edit distance 0.450"]),
    ],
)
def test_the_demo_prints_one_line_per_method_the_refresh_compared(metrics, expected) -> None:
    from plugin.demo import method_lines

    lines = method_lines({"metrics": metrics})
    assert [line[: len(want)] for line, want in zip(lines, expected)] == expected and len(lines) == len(expected)


def test_the_refresh_chooses_the_method_within_the_brands_golden_set_tolerance(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh's method choice (plugin/loop/methods.method_candidates) hands `choose_method` the brand's
    HOUSESTYLE_GATE_GOLDEN_TOLERANCE, so the golden-set rule is live in production and not only in unit tests.

    Catches `choose_method(scored, golden_tolerance=settings.gate_golden_tolerance)` -> `choose_method(scored)` (or
    any other tolerance) in plugin/loop/methods.py, and each candidate's golden-set chrF not handed on (the rule would
    be moot). Training, export and scoring are stand-ins: only the choice runs (the real scoring:
    tests/test_preference_training.py)."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from core.settings import get_settings
    from plugin.loop import methods

    settings = get_settings().model_copy(update={"gate_golden_tolerance": 3.5, "preference_min_pairs": 1,
                                                 "preference_method": "dpo"})
    monkeypatch.setattr(methods, "export_dataset", lambda options, **_: SimpleNamespace(
        records={"train": 30, "validation": 0, "test": 4}))
    monkeypatch.setattr(methods, "train_preference", lambda *_, **__: SimpleNamespace(
        version="v-dpo", path=tmp_path / "dpo"))
    monkeypatch.setattr(methods, "reply_engine", lambda *_, **__: nullcontext())
    monkeypatch.setattr(methods, "LoadedModels", lambda *_: None)
    monkeypatch.setattr(methods, "TransformersReplies", lambda models: "generator")
    distances = {"sft": 0.40, "dpo": 0.30}
    golden = {tmp_path / "sft": 50.0, tmp_path / "dpo": 47.0}  # dpo 3 points below SFT: within 3.5, beyond 2.5
    monkeypatch.setattr(methods, "golden_chrf", lambda generator, folder, **_: golden[folder])
    monkeypatch.setattr(methods, "score_preference", lambda base, folder, version, name, *_, **__: candidate(
        name, distances[name]).preference)
    told = []

    def choose(scored, **given):
        told.append(given)
        return choose_method(scored, **given)

    monkeypatch.setattr(methods, "choose_method", choose)
    run = SimpleNamespace(step=lambda *_: None)
    sft = SimpleNamespace(version="v-sft", path=tmp_path / "sft")
    choice, winner = methods.method_candidates(settings, "base", sft, tmp_path / "refresh-0001", run, brand_id=1)
    assert told == [{"golden_tolerance": 3.5}]  # the brand's own tolerance, not the function's "no rule" default
    assert choice.winner.method == "dpo" and winner == tmp_path / "dpo"
    assert [c.golden_chrf for c in choice.candidates] == [50.0, 47.0]

    stricter = settings.model_copy(update={"gate_golden_tolerance": 2.5})  # the same figures, a stricter brand
    choice, winner = methods.method_candidates(stricter, "base", sft, tmp_path / "refresh-0001", run, brand_id=1)
    assert choice.winner.method == "sft" and winner == tmp_path / "sft"
    assert "dpo's golden-set chrF 47.0 regresses from sft's 50.0 by more than 2.5" in choice.reason
