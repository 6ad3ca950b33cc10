"""The feedback loop's commands: `refresh`, `stats` and `demo`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from collector.db import session_scope
from collector.errors import HouseStyleError
from collector.models import RunStatus
from collector.stats import version_stats


def refresh_command(
    actor: Annotated[str, typer.Option(help="Who asked, recorded with the promotion.")] = "cli",
) -> None:
    """Export reviewed data, train a candidate, evaluate it against the live version, and swap it in if it wins.

    With `housestyle serve` running on the same HOUSESTYLE_HOME the swap happens in the running service; without
    it the registry records the new live version for the next start. Only one refresh runs at a time.
    """
    from plugin.refresh import run_refresh

    outcome = run_refresh(actor=actor)
    if outcome.gate is not None:
        typer.echo(f"gate {'passed' if outcome.gate.passed else 'refused'}: {outcome.gate.reason}")
    if outcome.status == RunStatus.FAILED:
        raise HouseStyleError(f"refresh run {outcome.run_id} failed: {outcome.error}")
    verdict = "promoted" if outcome.promoted else "kept as a candidate"
    typer.echo(f"refresh run {outcome.run_id}: {outcome.candidate} {verdict}")


def stats_table(title: str = "Agents' reviews per version") -> Table:
    """Acceptance, edit and rejection rates per adapter version, from live reviews (imports excluded)."""
    table = Table(title=title)
    for column in ("version", "reviews", "accepted", "edited", "rejected", "mean edit distance"):
        table.add_column(column, justify="left" if column == "version" else "right")
    with session_scope() as session:
        for row in version_stats(session):
            table.add_row(row.version, str(row.reviews), f"{row.acceptance_rate:.0%}", f"{row.edit_rate:.0%}",
                          f"{row.rejection_rate:.0%}", f"{row.mean_edit_distance:.2f}")
    return table


def stats_command() -> None:
    """How agents treat each adapter version's drafts: the online measure of the house style."""
    Console().print(stats_table())


def demo_command(
    per_round: Annotated[int, typer.Option(help="Customers per round.")] = 24,
    port: Annotated[int, typer.Option(help="Port of the demo's service on 127.0.0.1.")] = 8765,
    serve: Annotated[bool, typer.Option("--serve", help="Keep the service up afterwards for the web UI.")] = False,
) -> None:
    """Run the whole loop on the bundled GadgetCorp data: serve, review, refresh, swap, and compare.

    Uses a fresh store in HOUSESTYLE_HOME/demo; the tiny base model is built once in HOUSESTYLE_HOME/models/base.
    """
    from plugin.demo import run_demo

    run_demo(per_round=per_round, port=port, keep_serving=serve)


def register(app: typer.Typer) -> None:
    app.command("refresh")(refresh_command)
    app.command("stats")(stats_command)
    app.command("demo")(demo_command)
