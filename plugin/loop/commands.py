"""The feedback loop's commands: `housestyle refresh` and `housestyle stats`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from collector.brands import brand_id_of, entry_settings
from collector.cli import BrandOption
from collector.stats import version_stats
from core.db import session_scope
from core.errors import HouseStyleError
from core.models import RunStatus
from core.settings import Settings
from plugin.loop.decision import RemoteSwapper


def refresh_command(
    actor: Annotated[str, typer.Option(help="Who asked, recorded with the promotion.")] = "cli",
    brand: BrandOption = None,
) -> None:
    """Export reviewed data, train a candidate, evaluate it against the live version, and swap it in if it wins.

    With `housestyle serve` running on the same HOUSESTYLE_HOME the swap happens in the running service; without
    it the registry records the new live version for the next start. With HOUSESTYLE_REFRESH_CANARY_SHARE above 0
    a winning candidate starts as a canary instead. Only one refresh of a brand runs at a time.
    """
    settings = entry_settings(brand)
    from plugin.loop.refresh import run_refresh  # the trainer (torch) loads for a refresh, not for every command

    outcome = run_refresh(settings, RemoteSwapper(settings), actor=actor)
    if outcome.gate is not None:
        typer.echo(f"gate {'passed' if outcome.gate.passed else 'refused'}: {outcome.gate.reason}")
    if outcome.status == RunStatus.FAILED:
        raise HouseStyleError(f"refresh run {outcome.run_id} failed: {outcome.error}")
    if outcome.applied is not None:
        verdict = outcome.applied.describe(outcome.candidate or "", settings.public_model_name)
    else:
        verdict = f"{outcome.candidate} kept as a candidate"
    typer.echo(f"refresh run {outcome.run_id}: {verdict}")


def stats_table(settings: Settings, title: str = "Agents' reviews per version") -> Table:
    """The correction rate (edited + rejected) per adapter version, with its parts, from live reviews."""
    table = Table(title=title)
    table.add_column("version", no_wrap=True)  # ids are what people copy into `housestyle adapters ...`
    for column in ("reviews", "corrected", "accepted", "edited", "rejected", "edit distance"):
        table.add_column(column, justify="right")
    with session_scope(settings.resolved_database_url) as session:
        for row in version_stats(session, brand_id=brand_id_of(settings, session)):
            table.add_row(row.version, str(row.reviews), f"{row.correction_rate:.0%}", f"{row.acceptance_rate:.0%}",
                          f"{row.edit_rate:.0%}", f"{row.rejection_rate:.0%}", f"{row.mean_edit_distance:.2f}")
    return table


def stats_command(brand: BrandOption = None) -> None:
    """How agents treat each adapter version's drafts: the share they had to correct, the online measure of style."""
    Console().print(stats_table(entry_settings(brand)))


def register(app: typer.Typer) -> None:
    app.command("refresh")(refresh_command)
    app.command("stats")(stats_command)
