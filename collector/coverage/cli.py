"""The `housestyle coverage` command: the coverage report, printed or as JSON."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from collector.brands import entry_settings
from core import db


def coverage_command(
    export: Annotated[
        Path | None, typer.Option("--export", help="Count splits in this export folder (exact, after de-duplication).")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(help="Correction rates of this adapter version's drafts only ('base': the base model)."),
    ] = None,
    include_imported: Annotated[
        bool, typer.Option("--include-imported", help="Also count the reviews that came with imported history.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the export's split (without --export).")] = 0,
    holdout_after: Annotated[
        datetime | None, typer.Option(help="As the export's --holdout-after (without --export).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON (what the dashboard reads).")] = False,
) -> None:
    """Which products and intents the knowledge base and the conversations cover, and the gaps before training.

    Products are the knowledge base's; intents come from keywords (HOUSESTYLE_COVERAGE_INTENTS). Per split counts
    follow the export's split rule; a product or intent with fewer than HOUSESTYLE_COVERAGE_MIN_TRAINING_CONVERSATIONS
    in training, or a correction rate above HOUSESTYLE_COVERAGE_MAX_CORRECTION_RATE, is flagged.
    """
    from collector.coverage.report import coverage_report
    from collector.export import export_options

    options = export_options(out=Path("."), seed=seed, holdout_after=holdout_after)
    settings = entry_settings()
    with db.session_scope(settings.resolved_database_url) as session:
        report = coverage_report(
            session, options=options, export_dir=export, version=version, include_imported=include_imported,
            settings=settings,
        )
    typer.echo(json.dumps(report.model_dump(mode="json"), indent=2) if as_json else report.summary())


def register(app: typer.Typer) -> None:
    """Attach `coverage` to the root CLI."""
    app.command("coverage")(coverage_command)
