"""`housestyle adapters ...`: list, promote, roll back and canary adapter versions (live service or registry)."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from collector.db import session_scope
from collector.errors import ConflictError, InputError
from collector.registry import get_adapter, list_adapters
from collector.settings import get_settings
from serving import lifecycle
from serving.control import AdminClient, read_control_file
from serving.validation import validate_adapter
from serving.vllm_server import resolved_base_model

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


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _admin() -> AdminClient | None:
    control = read_control_file(get_settings())
    return AdminClient(control) if control else None


def _validate_offline(version: str) -> None:
    """Without a running service, still refuse adapters that the next `serve` would refuse."""
    settings = get_settings()
    path = lifecycle.adapter_path(version)
    try:
        validate_adapter(path, served_base_model=resolved_base_model(settings), max_lora_rank=settings.max_lora_rank)
    except InputError as exc:
        lifecycle.mark_rejected(version, actor="cli", reason=str(exc))
        raise


@adapters_app.command("list")
def list_command() -> None:
    """Show every registered version (newest first), its status, and what the running service serves."""
    console = Console()
    admin = _admin()
    serving = admin.status().get("serving") if admin else None
    table = Table()
    for column in ("version", "status", "canary share", "rank", "created"):
        table.add_column(column, no_wrap=True)
    table.add_column("path", overflow="fold")
    with session_scope() as session:
        for adapter in list_adapters(session):
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
) -> None:
    """Make VERSION live behind the public model name (zero-downtime swap on every replica)."""
    actor = actor or default_actor()
    admin = _admin()
    if admin:
        result = admin.promote(version, actor, reason)
        typer.echo(f"{version} is live on {len(result['replicas'])} replica(s); previous: {result['previous'] or 'base model'}")
        return
    _validate_offline(version)
    if lifecycle.registry_live_version() == version:
        raise ConflictError(f"{version} is already live")
    previous = lifecycle.mark_live(version, action="promote", actor=actor, reason=reason)
    typer.echo(f"{version} is live in the registry (previous: {previous or 'base model'}); no service is running, "
               "the next `housestyle serve` loads it")


@adapters_app.command("rollback")
def rollback_command(
    version: Annotated[str | None, typer.Argument(help="Version to go back to; default the previous live one.")] = None,
    actor: Actor = "",
    reason: Reason = None,
) -> None:
    """Go back to the previous live version, or to any kept VERSION."""
    actor = actor or default_actor()
    admin = _admin()
    if admin:
        result = admin.rollback(version, actor, reason)
        typer.echo(f"rolled back: {result['version']} is live (was {result['previous'] or 'base model'})")
        return
    current = lifecycle.registry_live_version()
    version = version or lifecycle.previous_live_version(current)
    if version == current:
        raise ConflictError(f"{version} is already live")
    _validate_offline(version)
    lifecycle.mark_live(version, action="rollback", actor=actor, reason=reason)
    typer.echo(f"rolled back: {version} is live in the registry (was {current or 'base model'}); "
               "the next `housestyle serve` loads it")


@adapters_app.command("canary")
def canary_command(
    version: Annotated[str, typer.Argument(help="Version to try on a share of new conversations.")],
    share: Annotated[float | None, typer.Option("--share", help="Share 0..1 of new conversations; 0 ends the canary.")] = None,
    actor: Actor = "",
    reason: Reason = None,
) -> None:
    """Route a share of NEW conversations (sticky per conversation) to VERSION; the rest stay on the live one."""
    actor = actor or default_actor()
    share = get_settings().canary_share if share is None else share
    if not 0.0 <= share <= 1.0:
        raise InputError(f"--share {share} is not between 0 and 1; use e.g. --share 0.1")
    admin = _admin()
    if admin:
        admin.canary(version, share, actor, reason)
    elif share == 0.0:
        canary = lifecycle.registry_canary()
        if canary is None or canary[0] != version:
            raise ConflictError(f"{version} is not the canary; nothing to end")
        lifecycle.end_canary(version, actor=actor, reason=reason)
    else:
        if lifecycle.registry_live_version() == version:
            raise ConflictError(f"{version} is already live; a canary must be another version")
        _validate_offline(version)
        lifecycle.mark_canary(version, share, actor=actor, reason=reason)
    where = "on the running service" if admin else "in the registry (the next `housestyle serve` applies it)"
    typer.echo(f"canary ended for {version} {where}" if share == 0.0 else f"{version} gets {share:.0%} of new conversations {where}")


@adapters_app.command("history")
def history_command(
    version: Annotated[str | None, typer.Argument(help="Only this version's events.")] = None,
) -> None:
    """Who promoted, rolled back or canaried which version, and why (newest first)."""
    from collector.registry import history

    table = Table()
    for column in ("when", "version", "action", "actor"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")
    with session_scope() as session:
        if version:
            get_adapter(session, version)
        for event in history(session, version):
            table.add_row(event.created_at.strftime("%Y-%m-%d %H:%M:%S"), event.version, event.action, event.actor,
                          event.reason or "")
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Attach `housestyle adapters ...` to the root CLI."""
    app.add_typer(adapters_app, name="adapters")
