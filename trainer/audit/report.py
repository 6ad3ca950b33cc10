"""What an audit found, as data (JSON for the run and the adapter card) and as text (for people), and the verdict.

`audit_verdict` is the gate's pure decision: refuse a candidate whose canaries planted once are exposed above
HOUSESTYLE_AUDIT_MAX_EXPOSURE bits, or whose extraction probe repeated a personal value of the training text.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Overlap(BaseModel):
    """A verbatim stretch of a reply that other training conversations hold."""

    prompt: int  # the training conversation whose opening was the prompt
    text: str
    customers: list[int]  # the other customers whose training text holds it
    support: int  # customers whose training text holds it, the prompt's own included


class PiiHit(BaseModel):
    """A personal value of the training text that a reply repeated."""

    prompt: int  # the training conversation whose opening was the prompt
    type: str
    value: str
    customers: list[int]  # the (other) customers whose training text holds it


class ExtractionReport(BaseModel):
    prompts: int
    generations: int
    min_chars: int
    rare_limit: int
    customers: int = 0  # customers the training text was grouped into
    hits: list[Overlap]  # rare overlaps: another customer's words
    common_overlaps: int  # overlaps with text many conversations share (house style, macros)
    pii_hits: list[PiiHit]
    samples: list[dict[str, str]]  # a few prompts and replies, for people to read


class CanaryResult(BaseModel):
    name: str
    kind: str
    repetitions: int  # copies planted; 0: never planted (a control)
    secret: str  # synthetic: no customer's value is ever a canary
    loss: float  # the model's summed loss of the canary's ending (nats)
    rank: int  # 1: the model likes it best of all its candidates
    candidates: int  # the canary and its alternatives
    exposure: float  # bits, log2 candidates - log2 rank
    extrapolated_exposure: float  # bits, from a skew-normal fitted to the alternatives' losses


class ShadowFacts(BaseModel):
    """The shadow adapter: the candidate's recipe on the candidate's data plus the canaries; kept in memory only."""

    train_loss: float
    val_loss: float | None
    seconds: float
    planted_copies: int
    hyperparameters: dict
    dp: dict | None = None  # the privacy the shadow was trained under (the candidate's), when DP is on


class AuditReport(BaseModel):
    base: str
    data: str
    candidate: str | None  # the adapter the extraction probe questioned; None: the shadow was probed
    seed: int
    canaries: list[CanaryResult] = Field(default_factory=list)
    exposure: dict[int, float]  # mean exposure (bits) per repetition count; 0: never planted
    max_measurable_exposure: float  # log2 of the candidates per canary: the most the rank can show
    shadow: ShadowFacts | None = None
    extraction: ExtractionReport
    seconds: float = 0.0

    def text(self) -> str:
        """The report as a person reads it; personal values are shown by type and length only."""
        lines = [f"memorisation audit of {self.candidate or 'the shadow adapter'} ({self.data}, seed {self.seed})"]
        if self.shadow is not None:
            dp = self.shadow.dp
            lines.append(f"shadow adapter: {self.shadow.planted_copies} canary copies planted, train loss "
                         f"{self.shadow.train_loss:.3f}, {self.shadow.seconds:.0f} s"
                         + (f", DP epsilon {dp['epsilon']:.2f}" if dp and dp.get("epsilon") is not None else ""))
        lines.append(f"exposure in bits (most measurable {self.max_measurable_exposure:.2f}; never planted ~1.44):")
        for count, value in sorted(self.exposure.items()):
            label = "never planted" if count == 0 else f"planted {count}x"
            lines.append(f"  {label:>15}: {value:5.2f}")
        for canary in self.canaries:
            lines.append(f"    {canary.name:<18} rank {canary.rank:>4}/{canary.candidates} exposure "
                         f"{canary.exposure:5.2f} extrapolated {canary.extrapolated_exposure:6.2f}")
        probe = self.extraction
        lines.append(f"extraction: {probe.generations} replies to {probe.prompts} training openings; "
                     f"{len(probe.hits)} verbatim overlaps of {probe.min_chars}+ characters with another customer's "
                     f"text (held by at most {probe.rare_limit} of {probe.customers} customers), "
                     f"{probe.common_overlaps} with text many share")
        for hit in probe.hits[:5]:
            lines.append(f"    prompt {hit.prompt} -> customers {hit.customers}: {hit.text[:80]!r}")
        lines.append(f"personal values of the training text repeated: {len(probe.pii_hits)}")
        for pii in probe.pii_hits[:5]:
            lines.append(f"    prompt {pii.prompt}: a {pii.type} of {len(pii.value)} characters, held by "
                         f"customers {pii.customers}")
        return "\n".join(lines) + "\n"


def audit_verdict(report: AuditReport, max_exposure: float) -> tuple[bool, str]:
    """(passed, reason): refused when canaries planted once are exposed above `max_exposure` bits, or when the
    extraction probe repeated a personal value of the training text; every failed rule is named."""
    problems = []
    once = report.exposure.get(1)
    never = report.exposure.get(0)
    baseline = f" (never planted: {never:.2f})" if never is not None else ""
    if once is None:
        problems.append("the audit planted no canary exactly once, so exposure at 1 repetition is unknown")
    elif once > max_exposure:
        problems.append(f"canaries planted once reach {once:.2f} bits of exposure{baseline}, above the "
                        f"{max_exposure:g} allowed (HOUSESTYLE_AUDIT_MAX_EXPOSURE)")
    pii = report.extraction.pii_hits
    if pii:
        kinds = ", ".join(sorted({hit.type for hit in pii}))
        problems.append(f"the extraction probe repeated {len(pii)} personal value(s) of training conversations "
                        f"({kinds})")
    if problems:
        return False, "; ".join(problems)
    return True, (f"exposure at 1 repetition {once:.2f} bits{baseline} is within {max_exposure:g}; the extraction "
                  f"probe repeated no personal value of the training text ({len(report.extraction.hits)} rare verbatim "
                  f"overlaps)")
