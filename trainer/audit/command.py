"""`housestyle audit`: does an adapter leak? Canary exposure on a shadow adapter, an extraction probe, a verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from collector.cli import BrandOption
from core.errors import InputError


def audit_command(
    base: Annotated[str, typer.Option("--base", help="Base model: a local folder or a hub id.")],
    data: Annotated[Path, typer.Option("--data", help="The export the candidate was trained on (chat JSONL).")],
    candidate: Annotated[Path | None, typer.Option(
        "--candidate", help="Adapter folder to audit: the shadow copies its recipe and the probe questions it; "
                            "unset: audit the base's preset, probing the shadow.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the report here as JSON (and .txt beside it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report instead of the text one.")] = False,
    max_exposure: Annotated[float | None, typer.Option(
        help="Refuse above this exposure (bits) at 1 repetition; default HOUSESTYLE_AUDIT_MAX_EXPOSURE.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the canaries, their places and the probe's prompts.")] = 0,
    alternatives: Annotated[int, typer.Option(help="Alternatives each canary is ranked against.")] = 127,
    prompts: Annotated[int, typer.Option(help="Training openings the extraction probe prompts with.")] = 32,
    samples: Annotated[int, typer.Option(help="Sampled replies per prompt besides the greedy one.")] = 2,
    min_chars: Annotated[int, typer.Option(help="Shortest verbatim overlap (characters) the probe reports.")] = 50,
    epochs: Annotated[int | None, typer.Option(
        help="Train the shadow for this many epochs instead of the candidate's (faster, but then it is not the "
             "candidate's recipe).")] = None,
    no_pii: Annotated[bool, typer.Option("--no-pii", help="Skip the redactor's personal-value check.")] = False,
    brand: BrandOption = None,
) -> None:
    """Measure whether an adapter memorises what customers wrote: random canaries (order ids, e-mails, phone
    numbers, a sentence) planted 1, 4 and 16 times into agents' replies of a SHADOW adapter trained by the
    candidate's recipe (never saved or served: canaries never reach a customer), ranked against alternatives
    (exposure in bits); then the candidate's greedy and sampled replies to training openings, matched against
    other customers' conversations and the personal values in the training text. Exits 1 when the verdict refuses.
    """
    from collector.brands import entry_settings
    from trainer.audit.report import audit_verdict
    from trainer.audit.runner import AuditOptions, run_audit

    settings = entry_settings(brand)
    if alternatives < 1 or prompts < 0 or samples < 0 or min_chars < 8:
        raise InputError("--alternatives must be at least 1, --prompts and --samples at least 0, "
                         "--min-chars at least 8")
    if candidate is not None and not (candidate / "adapter_config.json").is_file():
        raise InputError(f"{candidate} is not an adapter folder (no adapter_config.json); pass what `housestyle "
                         "train` printed")
    options = AuditOptions(seed=seed, alternatives=alternatives, prompts=prompts, samples=samples, min_chars=min_chars,
                           look_for_pii=not no_pii, overrides={"epochs": epochs} if epochs else {})
    report = run_audit(base, data, settings=settings, candidate=candidate, options=options,
                       progress=lambda message: typer.echo(message, err=True))
    limit = max_exposure if max_exposure is not None else settings.audit_max_exposure
    passed, reason = audit_verdict(report, limit)
    document = {**report.model_dump(mode="json"), "verdict": {"passed": passed, "reason": reason,
                                                             "max_exposure": limit}}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
        out.with_suffix(".txt").write_text(report.text() + f"{'passed' if passed else 'refused'}: {reason}\n")
    typer.echo(json.dumps(document, indent=2) if as_json else report.text().rstrip())
    typer.echo(f"{'passed' if passed else 'refused'}: {reason}", err=as_json)
    if not passed:
        raise typer.Exit(1)
