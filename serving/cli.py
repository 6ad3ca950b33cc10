"""`housestyle adapters ...`: list, promote, roll back and canary adapter versions (live service or registry), and
publish them into the adapter store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from collector.brands import brand_id_of, entry_settings
from collector.cli import BrandOption, default_actor
from core.adapter_store import open_adapter_store
from core.db import session_scope
from core.errors import InputError
from core.registry import check_version_id, get_adapter, list_adapters
from serving import remote

adapters_app = typer.Typer(
    help=(
        "Adapter versions behind the public model name. With `housestyle serve` running on this HOUSESTYLE_HOME, "
        "changes apply to the running service and return once every replica serves them; otherwise only the "
        "registry changes and the next `serve` start loads it."
    ),
    no_args_is_help=True,
)

Actor = Annotated[str, typer.Option("--actor", help="Who made the change (recorded in the history).")]
Reason = Annotated[str | None, typer.Option("--reason", help="Why (recorded in the history).")]


@adapters_app.command("list")
def list_command(brand: BrandOption = None) -> None:
    """Show the brand's registered versions (newest first), their status, and what the running service serves."""
    console = Console()
    settings = entry_settings(brand)
    admin = remote.running_service(settings)
    serving = admin.status(settings.brand).get("serving") if admin else None
    table = Table()
    for column in ("version", "status", "canary share", "rank", "created"):
        table.add_column(column, no_wrap=True)
    table.add_column("path", overflow="fold")
    with session_scope(settings.resolved_database_url) as session:
        for adapter in list_adapters(session, brand_id_of(settings, session)):
            share = f"{adapter.canary_share:.0%}" if adapter.status == "canary" else ""
            table.add_row(adapter.version, str(adapter.status), share, str(adapter.rank),
                          adapter.created_at.strftime("%Y-%m-%d %H:%M"), adapter.path)
    console.print(table)
    if admin is None:
        console.print("no running service on this HOUSESTYLE_HOME: the table is the registry")
        return
    if serving is None:
        console.print("the running service has no model servers (started with --no-vllm)")
        return
    console.print(f"serving: live={serving['live'] or 'base model'} canary={serving['canary'] or '-'}"
                  f"{' share=' + format(serving['canary_share'], '.0%') if serving['canary'] else ''}")
    for replica in serving["replicas"]:
        state = "healthy" if replica["healthy"] else "DOWN"
        console.print(f"  replica {replica['url']} {state}, adapters loaded: {', '.join(replica['loaded_adapters']) or '-'}")


@adapters_app.command("promote")
def promote_command(
    version: Annotated[str, typer.Argument(help="Version to make live, e.g. v0003-1a2b3c4d.")],
    actor: Actor = "",
    reason: Reason = None,
    brand: BrandOption = None,
) -> None:
    """Make VERSION live behind its brand's public model name (zero-downtime swap on every replica)."""
    typer.echo(remote.promote_version(version, actor=actor or default_actor(), reason=reason,
                                      settings=entry_settings(brand), brand=brand))


@adapters_app.command("rollback")
def rollback_command(
    version: Annotated[str | None, typer.Argument(help="Version to go back to; default the previous live one.")] = None,
    actor: Actor = "",
    reason: Reason = None,
    brand: BrandOption = None,
) -> None:
    """Go back to the brand's previous live version, or to any kept VERSION of it."""
    typer.echo(remote.rollback_version(version, actor=actor or default_actor(), reason=reason,
                                       settings=entry_settings(brand)))


@adapters_app.command("canary")
def canary_command(
    version: Annotated[str, typer.Argument(help="Version to try on a share of new conversations.")],
    share: Annotated[float | None, typer.Option("--share", help="Share 0..1 of new conversations; 0 ends the canary.")] = None,
    actor: Actor = "",
    reason: Reason = None,
    brand: BrandOption = None,
) -> None:
    """Route a share of NEW conversations (sticky per conversation) to VERSION; the rest stay on the live one."""
    settings = entry_settings(brand)
    share = settings.canary_share if share is None else share
    typer.echo(remote.canary_version(version, share, actor=actor or default_actor(), reason=reason, settings=settings,
                                     brand=brand))


@adapters_app.command("history")
def history_command(
    version: Annotated[str | None, typer.Argument(help="Only this version's events.")] = None,
    brand: BrandOption = None,
) -> None:
    """Who promoted, rolled back or canaried which version, and why (newest first)."""
    from core.registry import history

    table = Table()
    for column in ("when", "version", "action", "actor"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")
    settings = entry_settings(brand)
    with session_scope(settings.resolved_database_url) as session:
        if version:
            get_adapter(session, version)
        for event in history(session, version, brand_id=brand_id_of(settings, session)):
            table.add_row(event.created_at.strftime("%Y-%m-%d %H:%M:%S"), event.version, event.action, event.actor,
                          event.reason or "")
    Console().print(table)


@adapters_app.command("publish")
def publish_command(
    version: Annotated[str | None, typer.Argument(help="Version to copy into the store, e.g. v0003-1a2b3c4d.")] = None,
    all_versions: Annotated[bool, typer.Option("--all", help="Every version of the brand (oldest first).")] = False,
    brand: BrandOption = None,
) -> None:
    """Copy VERSION (or --all) into HOUSESTYLE_ADAPTER_STORE, for versions registered before it was set; a version
    already there is left as it is."""
    if (version is None) == (not all_versions):
        raise InputError("name one VERSION or give --all (not both); `housestyle adapters list` shows the versions")
    settings = entry_settings(brand)
    store = open_adapter_store(settings)
    if store is None:
        raise InputError("HOUSESTYLE_ADAPTER_STORE is not set: set it to a shared directory or s3://bucket/prefix "
                         "(docs/production.md, Adapters on every host) and publish again")
    with session_scope(settings.resolved_database_url) as session:
        adapters = ([get_adapter(session, check_version_id(version))] if version
                    else list_adapters(session, brand_id_of(settings, session))[::-1])
    for adapter in adapters:
        copied = store.publish(adapter.version, Path(adapter.path))
        typer.echo(f"{adapter.version}: {'published to' if copied else 'already in'} {store.where(adapter.version)}")


def register(app: typer.Typer) -> None:
    """Attach `housestyle adapters ...` to the root CLI."""
    app.add_typer(adapters_app, name="adapters")
