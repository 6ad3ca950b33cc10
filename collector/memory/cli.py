"""Answer memory's commands: `memory search` (what a reply would be shown) and `memory outdated` (never again)."""

from __future__ import annotations

from typing import Annotated

import typer

from collector.brands import brand_id_of, entry_settings
from core import db
from core.errors import InputError

memory_app = typer.Typer(
    help="Answer memory: the brand's past reviewed exchanges that replies are shown as examples.",
    no_args_is_help=True,
)


@memory_app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help='A customer message, e.g. "Is my SuperWidget under warranty?"')],
    k: Annotated[int, typer.Option("-k", help="Exchanges to show.")] = 3,
) -> None:
    """Show the past exchanges (redacted) a reply to QUERY would be shown, with their scores and review ids."""
    from collector.memory.recall import recall

    if k < 1:
        raise InputError("-k must be at least 1")
    settings = entry_settings()
    with db.session_scope(settings.resolved_database_url) as session:
        found = recall(session, [("user", query)], brand_id=brand_id_of(settings, session),
                       settings=settings.model_copy(update={"memory_examples": k}))
    if not found.examples:
        typer.echo("no past exchange scores above HOUSESTYLE_MEMORY_MIN_SCORE for this query")
    for example in found.examples:
        typer.echo(f"{example.score:7.3f}  review {example.review_id}\n         customer: {example.customer}\n"
                   f"         agent:    {example.reply}")


@memory_app.command("outdated")
def outdated_command(
    review_id: Annotated[int, typer.Argument(help="The review id of the exchange (see `memory search`).")],
) -> None:
    """Mark a past exchange outdated: no reply is shown it again (it stays in the store and in training data)."""
    from collector.memory.marks import mark_outdated

    settings = entry_settings()
    with db.session_scope(settings.resolved_database_url) as session:
        marked = mark_outdated(session, review_id, actor="cli", brand_id=brand_id_of(settings, session))
    typer.echo(f"review {review_id} marked outdated" if marked else f"review {review_id} was already outdated")


def register(app: typer.Typer) -> None:
    """Attach `memory …` to the root CLI."""
    app.add_typer(memory_app, name="memory")
