"""The gate: may a candidate replace the live version? A pure decision on both versions' scores and the settings.

The candidate must beat the live version's held-out chrF by `gate_min_chrf_gain` points, its held-out loss by
`gate_min_loss_gain`, and may score at most `gate_golden_tolerance` chrF points below it on the golden set.
Each rule is checked alone and every failed rule is named in the reason.

Before that, when a refresh trained candidates of several methods (SFT, and SFT+DPO or SFT+KTO), `choose_method`
picks the one to put through the gate, by held-out edit distance to what agents finally sent.
"""

from __future__ import annotations

from pydantic import BaseModel

from core.settings import Settings
from trainer.evaluate import VersionScores
from trainer.preference_eval import PreferenceScores


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


def gate(candidate: VersionScores, live: VersionScores, rules: GateRules,
         audit: tuple[bool, str] | None = None) -> GateDecision:
    """Pass only if every rule holds; the reason names each failed rule, or the winning figures.

    `audit`: the memorisation audit's verdict (`trainer.audit.audit_verdict`) when the refresh ran one; a refused
    audit refuses the candidate like a quality rule."""
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
    if audit is not None and not audit[0]:
        problems.append(f"memorisation audit: {audit[1]}")
    if problems:
        return GateDecision(passed=False, reason="; ".join(problems), candidate=candidate, live=live)
    return GateDecision(
        passed=True, candidate=candidate, live=live,
        reason=(f"chrF {candidate.chrf:.1f} vs {live.chrf:.1f}, loss {candidate.loss:.3f} vs {live.loss:.3f}, "
                f"golden chrF {candidate.golden_chrf:.1f} vs {live.golden_chrf:.1f}, held-out replies an agent would "
                f"correct {candidate.correction_rate:.0%} vs {live.correction_rate:.0%} ({live.version})"),
    )


# --- which training method's candidate goes to the gate ------------------------------------------------------------

# A preference candidate costs a second training run and is the harder method to get right, so it replaces the plain
# SFT candidate only when its replies are visibly nearer what agents send: at least this much lower mean held-out
# edit distance (0..1; 0.01 is one character in a hundred).
MIN_EDIT_DISTANCE_GAIN = 0.01


class MethodCandidate(BaseModel):
    """A candidate of one training method, scored on the held-out review outcomes and the brand's golden set."""

    method: str  # sft, dpo, kto
    version: str
    preference: PreferenceScores
    golden_chrf: float | None = None  # on the brand's golden set; None when the brand has none (the rule is moot)


class MethodChoice(BaseModel):
    winner: MethodCandidate
    reason: str
    candidates: list[MethodCandidate]


def choose_method(candidates: list[MethodCandidate], *, min_edit_gain: float = MIN_EDIT_DISTANCE_GAIN,
                  golden_tolerance: float | None = None) -> MethodChoice:
    """The candidate with the lowest held-out edit distance, where anything but SFT must beat SFT by `min_edit_gain`
    (and, with `golden_tolerance` and chrF scores known, stay within it of SFT's golden-set chrF). Ties go to the
    higher preference accuracy, then to SFT. The reason names the figures, and why each loser lost."""
    if not candidates:
        raise ValueError("choose_method needs at least one candidate")
    sft = next((c for c in candidates if c.method == "sft"), candidates[0])
    best_sft = sft.preference.edit_distance
    eligible, why_not = [sft], []
    for candidate in candidates:
        if candidate is sft:
            continue
        distance = candidate.preference.edit_distance
        if distance > best_sft - min_edit_gain:
            why_not.append(f"{candidate.method}'s held-out edit distance {distance:.3f} is not {min_edit_gain:g} "
                           f"below {sft.method}'s {best_sft:.3f}")
        elif (golden_tolerance is not None and candidate.golden_chrf is not None and sft.golden_chrf is not None
              and candidate.golden_chrf < sft.golden_chrf - golden_tolerance):
            why_not.append(f"{candidate.method}'s golden-set chrF {candidate.golden_chrf:.1f} regresses from "
                           f"{sft.method}'s {sft.golden_chrf:.1f} by more than {golden_tolerance:g}")
        else:
            eligible.append(candidate)
    ranked = sorted(eligible, key=lambda c: (c.preference.edit_distance, -c.preference.preference_accuracy,
                                             c is not sft))
    winner = ranked[0]
    figures = ", ".join(f"{c.method} {c.preference.edit_distance:.3f} (preference accuracy "
                        f"{c.preference.preference_accuracy:.0%}"
                        + ("" if c.golden_chrf is None else f", golden-set chrF {c.golden_chrf:.1f}") + ")"
                        for c in candidates)
    reason = (f"{winner.method} wins: held-out edit distance to the agents' texts {figures}; the drafts agents saw "
              f"{winner.preference.draft_edit_distance:.3f}")
    if why_not:
        reason += "; " + "; ".join(why_not)
    return MethodChoice(winner=winner, reason=reason, candidates=candidates)
