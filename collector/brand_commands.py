"""`housestyle brands create|list|show|update`: the house styles this store keeps, each with its own voice and loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from collector.brands import (
    BrandFields,
    brand_fields,
    create_brand,
    entry_settings,
    get_brand,
    list_brands,
    settings_for,
    update_brand,
)
from collector.import_command import import_command
from core import db
from core.models import AdapterStatus, AdapterVersion, Brand, Conversation
from core.settings import Settings, get_settings

brands_app = typer.Typer(
    help="Brands: several house styles in one store and on one model server, each with its own company name, "
    "system prompt, public model name, adapter versions, keys, conversations, gate and refresh schedule.",
    no_args_is_help=True,
)

Company = Annotated[str | None, typer.Option("--company", help="Company the brand's assistant speaks for.")]
Prompt = Annotated[str | None, typer.Option("--system-prompt", help="Its system prompt (default: names the company).")]
PublicName = Annotated[str | None, typer.Option("--public-model-name", help="Model name its clients use "
                                                "(default <brand>-assistant).")]
Golden = Annotated[Path | None, typer.Option("--golden", help="JSONL golden set its candidates must not regress on.")]
ChrfGain = Annotated[float | None, typer.Option("--gate-min-chrf-gain", help="Its gate: chrF gain a candidate needs.")]
LossGain = Annotated[float | None, typer.Option("--gate-min-loss-gain", help="Its gate: loss gain a candidate needs.")]
Tolerance = Annotated[float | None, typer.Option("--gate-golden-tolerance", help="Its gate: golden chrF drop allowed.")]
Interval = Annotated[float | None, typer.Option("--refresh-interval-minutes", help="Refresh it every N minutes.")]
MinReviews = Annotated[int | None, typer.Option("--refresh-min-new-reviews", help="Refresh it after N new reviews.")]
Share = Annotated[float | None, typer.Option("--refresh-canary-share", help="Share its refreshes canary first.")]


def _installation() -> Settings:
    """The installation's settings (HOUSESTYLE_*, no brand's over them: each brand's are laid over these), with the
    store opened."""
    entry_settings()
    return get_settings()


FIELD_OF_OPTION = {"company": "company_name", "golden": "golden_path"}  # the rest are named as the fields


def _fields(options: dict[str, Any]) -> BrandFields:
    """The brand fields a command's options typed (options left out stay unset, so `update` changes only those)."""
    given = {FIELD_OF_OPTION.get(name, name): value for name, value in options.items() if value is not None}
    given = {name: value for name, value in given.items() if name in BrandFields.model_fields}
    if given.get("golden_path") is not None:
        given["golden_path"] = str(Path(given["golden_path"]).expanduser().resolve())
    return brand_fields(**given)


@brands_app.command("create")
def create_command(
    slug: Annotated[str, typer.Argument(help="Its name: lower-case letters, digits and '-', e.g. acme-business.")],
    company: Company = None, system_prompt: Prompt = None, public_model_name: PublicName = None, golden: Golden = None,
    gate_min_chrf_gain: ChrfGain = None, gate_min_loss_gain: LossGain = None, gate_golden_tolerance: Tolerance = None,
    refresh_interval_minutes: Interval = None, refresh_min_new_reviews: MinReviews = None,
    refresh_canary_share: Share = None,
    import_path: Annotated[Path | None, typer.Option("--import", help="Also import this file of its past "
                                                     "conversations (as `housestyle import PATH --brand SLUG`).")] = None,
) -> None:
    """Add a brand; it answers behind its own public model name with the base model until its first refresh."""
    fields = _fields(locals())
    settings = _installation()
    with db.session_scope(settings.resolved_database_url) as session:
        brand = create_brand(session, slug, fields, settings=settings)
        public = settings_for(settings, brand).public_model_name
    typer.echo(f"created brand {slug} ({brand.company_name}), served as model '{public}'")
    if import_path is not None:
        import_command(path=import_path, brand=slug)


@brands_app.command("update")
def update_command(
    slug: Annotated[str, typer.Argument(help="The brand to change.")],
    company: Company = None, system_prompt: Prompt = None, public_model_name: PublicName = None, golden: Golden = None,
    gate_min_chrf_gain: ChrfGain = None, gate_min_loss_gain: LossGain = None, gate_golden_tolerance: Tolerance = None,
    refresh_interval_minutes: Interval = None, refresh_min_new_reviews: MinReviews = None,
    refresh_canary_share: Share = None,
) -> None:
    """Change some of a brand's settings (the ones not given stay as they are)."""
    fields = _fields(locals())
    settings = _installation()
    with db.session_scope(settings.resolved_database_url) as session:
        update_brand(session, slug, fields, settings=settings)
    changed = ", ".join(sorted(fields.model_fields_set)) or "nothing"
    typer.echo(f"updated brand {slug}: {changed}"
               + ("; restart `housestyle serve` to serve the new model name" if public_model_name else ""))


def _counts(session: Any) -> tuple[dict[int, int], dict[int, str]]:
    conversations = dict(session.execute(
        select(Conversation.brand_id, func.count(Conversation.id)).group_by(Conversation.brand_id)).all())
    live = dict(session.execute(select(AdapterVersion.brand_id, AdapterVersion.version).where(
        AdapterVersion.status == AdapterStatus.LIVE)).all())
    return conversations, live


@brands_app.command("list")
def list_command() -> None:
    """Every brand: its public model name, conversations and live version."""
    settings = _installation()
    table = Table()
    for column in ("brand", "company", "public model", "conversations", "live version"):
        table.add_column(column, no_wrap=True)
    with db.session_scope(settings.resolved_database_url) as session:
        conversations, live = _counts(session)
        for brand in list_brands(session):
            effective = settings_for(settings, brand)
            table.add_row(brand.slug, effective.company_name, effective.public_model_name,
                          str(conversations.get(brand.id, 0)), live.get(brand.id, "base model"))
    Console().print(table)


def describe(brand: Brand, effective: Settings, conversations: int, live: str | None) -> list[tuple[str, str]]:
    """The rows `brands show` prints: what the brand sets itself, and what it takes from the installation."""
    own = {name for name in brand_fields().model_fields if getattr(brand, name, None) is not None}
    rows = [("brand", brand.slug), ("conversations", str(conversations)), ("live version", live or "base model")]
    for name in ("company_name", "system_prompt", "public_model_name", "golden_set", "gate_min_chrf_gain",
                 "gate_min_loss_gain", "gate_golden_tolerance", "refresh_interval_minutes", "refresh_min_new_reviews",
                 "refresh_canary_share"):
        origin = "brand" if name in own or (name == "golden_set" and brand.golden_path) else "HOUSESTYLE_*"
        rows.append((name, f"{getattr(effective, name)}  ({origin})"))
    return rows


@brands_app.command("show")
def show_command(slug: Annotated[str, typer.Argument(help="The brand to show.")]) -> None:
    """One brand's settings (its own, and those it takes from the installation) and where it stands."""
    settings = _installation()
    with db.session_scope(settings.resolved_database_url) as session:
        brand = get_brand(session, slug)
        conversations, live = _counts(session)
        rows = describe(brand, settings_for(settings, brand), conversations.get(brand.id, 0), live.get(brand.id))
    table = Table(show_header=False)
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
