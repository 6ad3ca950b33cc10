"""The gate: may a candidate replace the live version? A pure decision on both versions' scores and the settings.

The candidate must beat the live version's held-out chrF by `gate_min_chrf_gain` points, its held-out loss by
`gate_min_loss_gain`, and may score at most `gate_golden_tolerance` chrF points below it on the golden set.
Each rule is checked alone and every failed rule is named in the reason.
"""

from __future__ import annotations

from pydantic import BaseModel

from collector.settings import Settings
from trainer.evaluate import VersionScores


class GateRules(BaseModel):
    """The margins a candidate must clear (HOUSESTYLE_GATE_*)."""

    min_chrf_gain: float
    min_loss_gain: float
    golden_tolerance: float

    @classmethod
    def from_settings(cls, settings: Settings) -> GateRules:
        return cls(min_chrf_gain=settings.gate_min_chrf_gain, min_loss_gain=settings.gate_min_loss_gain,
                   golden_tolerance=settings.gate_golden_tolerance)


class GateDecision(BaseModel):
    passed: bool
    reason: str
    candidate: VersionScores
    live: VersionScores


def gate(candidate: VersionScores, live: VersionScores, rules: GateRules) -> GateDecision:
    """Pass only if every rule holds; the reason names each failed rule, or the winning figures."""
    problems = []
    if candidate.chrf < live.chrf + rules.min_chrf_gain:
        problems.append(f"held-out chrF {candidate.chrf:.1f} does not beat {live.version}'s {live.chrf:.1f} "
                        f"by {rules.min_chrf_gain:g}")
    if candidate.loss > live.loss - rules.min_loss_gain:
        problems.append(f"held-out loss {candidate.loss:.3f} is not below {live.version}'s {live.loss:.3f} "
                        f"by {rules.min_loss_gain:g}")
    if candidate.golden_chrf < live.golden_chrf - rules.golden_tolerance:
        problems.append(f"golden-set chrF {candidate.golden_chrf:.1f} regresses from {live.version}'s "
                        f"{live.golden_chrf:.1f} by more than {rules.golden_tolerance:g}")
    if problems:
        return GateDecision(passed=False, reason="; ".join(problems), candidate=candidate, live=live)
    return GateDecision(
        passed=True, candidate=candidate, live=live,
        reason=(f"chrF {candidate.chrf:.1f} vs {live.chrf:.1f}, loss {candidate.loss:.3f} vs {live.loss:.3f}, "
                f"golden chrF {candidate.golden_chrf:.1f} vs {live.golden_chrf:.1f} ({live.version})"),
    )
