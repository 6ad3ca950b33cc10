"""The gate: each rule on its own (chrF gain, loss gain, golden-set tolerance), and all together."""

from __future__ import annotations

import pytest

from plugin.loop.gate import GateRules, gate
from trainer.evaluate import VersionScores

RULES = GateRules(min_chrf_gain=1.0, min_loss_gain=0.05, golden_tolerance=2.0)
LIVE = VersionScores(version="v1", chrf=40.0, rougeL=30.0, loss=2.0, golden_chrf=50.0)


def candidate(**changes: float) -> VersionScores:
    """A candidate that clears every rule of RULES against LIVE, with some figures changed."""
    return VersionScores(**{"version": "v2", "chrf": 45.0, "rougeL": 35.0, "loss": 1.8, "golden_chrf": 50.0, **changes})


@pytest.mark.parametrize(
    ("scores", "passed", "failed_rules"),
    [
        (candidate(), True, []),
        # chrF: must beat live by at least the gain; exactly the gain is enough, a hair less is not
        (candidate(chrf=41.0), True, []),
        (candidate(chrf=40.9), False, ["held-out chrF"]),
        (candidate(chrf=30.0), False, ["held-out chrF"]),
        # loss: must be at least min_loss_gain below live's
        (candidate(loss=1.95), True, []),
        (candidate(loss=1.96), False, ["held-out loss"]),
        (candidate(loss=2.5), False, ["held-out loss"]),
        # golden set: may lose at most the tolerance
        (candidate(golden_chrf=48.0), True, []),
        (candidate(golden_chrf=47.9), False, ["golden-set chrF"]),
        # every failed rule is named
        (candidate(chrf=10.0, loss=3.0, golden_chrf=0.0), False, ["held-out chrF", "held-out loss", "golden-set chrF"]),
    ],
)
def test_each_gate_rule_holds_on_its_own(scores: VersionScores, passed: bool, failed_rules: list[str]) -> None:
    decision = gate(scores, LIVE, RULES)
    assert decision.passed is passed
    for rule in ("held-out chrF", "held-out loss", "golden-set chrF"):
        assert (rule in decision.reason) is (rule in failed_rules), (rule, decision.reason)
    if passed:
        assert f"chrF {scores.chrf:.1f} vs {LIVE.chrf:.1f}" in decision.reason and "(v1)" in decision.reason


def test_gate_rules_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import Settings

    monkeypatch.setenv("HOUSESTYLE_GATE_MIN_CHRF_GAIN", "7.5")
    monkeypatch.setenv("HOUSESTYLE_GATE_MIN_LOSS_GAIN", "0.2")
    monkeypatch.setenv("HOUSESTYLE_GATE_GOLDEN_TOLERANCE", "0")
    assert GateRules.from_settings(Settings()) == GateRules(min_chrf_gain=7.5, min_loss_gain=0.2, golden_tolerance=0)


@pytest.mark.parametrize(
    ("scores", "audit", "passed", "named"),
    [
        (candidate(), None, True, []),  # no audit ran (HOUSESTYLE_AUDIT_ON_REFRESH off)
        (candidate(), (True, "exposure 1.2 bits at 1 repetition"), True, []),
        (candidate(), (False, "canaries planted once exposed at 4.5 bits"), False, ["memorisation audit"]),
        # a refused audit is named beside the quality rules that failed too
        (candidate(chrf=30.0), (False, "an email of another customer"), False, ["held-out chrF", "memorisation audit"]),
    ],
)
def test_a_refused_memorisation_audit_refuses_an_otherwise_winning_candidate(
    scores: VersionScores, audit: tuple[bool, str] | None, passed: bool, named: list[str]
) -> None:
    """Catches the gate ignoring the audit's verdict (or refusing on a passed one)."""
    decision = gate(scores, LIVE, RULES, audit=audit)
    assert decision.passed is passed
    for rule in ("held-out chrF", "memorisation audit"):
        assert (rule in decision.reason) is (rule in named), (rule, decision.reason)
    if audit is not None and not audit[0]:
        assert audit[1] in decision.reason
