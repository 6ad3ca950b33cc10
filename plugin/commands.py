"""The plugin's commands: `housestyle serve` and `housestyle keys create|list|revoke`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from collector.brands import entry_settings
from core.db import session_scope
from core.models import ApiKeyRole
from core.settings import get_settings

keys_app = typer.Typer(help="API keys for the service: widget, agent and admin roles.", no_args_is_help=True)


def serve(
    host: Annotated[
        str, typer.Option(help="Interface to listen on; keep 127.0.0.1 behind a reverse proxy.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API (0: any free port).")] = 8000,
    vllm: Annotated[
        bool,
        typer.Option("--vllm/--no-vllm", help="Start vLLM (or attach to HOUSESTYLE_VLLM_URLS); --no-vllm: API only."),
    ] = True,
) -> None:
    """Serve the chat widget, review, OpenAI-compatible and Chatwoot API together with vLLM.

    The live adapter answers behind the public model name (the base model until one is promoted). Ctrl-C or SIGTERM
    stops the API and the model servers together. `housestyle adapters ...` talks to the running service.
    """
    from plugin.service import run_service

    run_service(get_settings(), host=host, port=port, with_vllm=vllm)


@keys_app.command("create")
def create_key(
    role: Annotated[ApiKeyRole, typer.Option(help="widget: the chat widget; agent: reviews + OpenAI API; admin: all.")],
    name: Annotated[str | None, typer.Option(help="Who holds the key; agent keys: the agent id in reviews.")] = None,
    brand: Annotated[list[str] | None, typer.Option(
        help="A brand the key may act on (repeat for several); widget keys: exactly one (default: the default "
             "brand); agent/admin keys: every brand when left out.")] = None,
) -> None:
    """Make a key. It is shown once, alone on the last line; only its hash is stored."""
    from collector.brands import brand_slugs
    from plugin.api.keys import create_key as make_key

    with session_scope(entry_settings().resolved_database_url) as session:
        row, key = make_key(session, role, name, brands=brand)
        slugs = brand_slugs(session)
        scope = "every brand" if row.brands is None else "brand " + ", ".join(slugs[b] for b in row.brands)
    typer.echo(f"created {row.role.value} key {row.id} '{row.name}' for {scope}; store it now, it is not shown "
               "again:", err=True)
    typer.echo(key)


@keys_app.command("list")
def list_keys(all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False) -> None:
    """Show the keys (never the keys themselves: their first characters)."""
    from collector.brands import brand_slugs
    from plugin.api.keys import list_keys as active_keys

    with session_scope(entry_settings().resolved_database_url) as session:
        rows = active_keys(session, include_revoked=all_keys)
        slugs = brand_slugs(session)
    table = Table("id", "name", "role", "brands", "starts with", "created", "revoked")
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            str(row.role),
            "all" if row.brands is None else ",".join(slugs.get(b, str(b)) for b in row.brands),
            row.prefix + "…",
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[int, typer.Argument(help="The key's id from `housestyle keys list`.")]) -> None:
    """Stop a key from working, at once."""
    from plugin.api.keys import revoke_key as revoke

    with session_scope(entry_settings().resolved_database_url) as session:
        row = revoke(session, key_id)
    typer.echo(f"revoked key {row.id} '{row.name}'")


def register(app: typer.Typer) -> None:
    """Attach the plugin's commands to the root CLI."""
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
