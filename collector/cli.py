"""The collector's commands: `db upgrade`, `import` and `export`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from collector.brands import entry_settings
from collector.import_command import BrandOption, default_actor, import_command, redact_store
from core import db
from core.settings import get_settings

db_app = typer.Typer(help="Look after the conversation store (SQLite by default, Postgres by URL).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the store's tables to the latest schema (also done automatically on start)."""
    url = db.open_store(get_settings().resolved_database_url)
    typer.echo(f"store {db.describe_url(url)} is at schema {db.current_revision(url)}")


@db_app.command("current")
def db_current() -> None:
    """Show which store is in use and its schema revision."""
    url = get_settings().resolved_database_url
    typer.echo(f"{db.describe_url(url)} {db.current_revision(url) or '(empty: run housestyle db upgrade)'}")


@db_app.command("backup")
def db_backup(
    out: Annotated[Path, typer.Option("--out", help="File to write (mode 0600); replaced only once complete.")],
) -> None:
    """Write the whole store to one file: a SQLite database, or a pg_dump custom-format archive for Postgres.

    Safe while `housestyle serve` runs. `housestyle db restore FILE` puts it back.
    """
    from collector.backup import backup_store
    from collector.backup_seal import KEY_FILE, backup_key, seal_path

    settings = entry_settings()
    summary = backup_store(settings.resolved_database_url, out, key=backup_key(settings.home, create=True))
    typer.echo(f"backed up {summary.store} ({summary.conversations} conversations, schema {summary.revision}) "
               f"to {summary.path}, sealed in {seal_path(summary.path).name} (a restore elsewhere needs "
               f"{settings.home / KEY_FILE})")


@db_app.command("restore")
def db_restore(
    path: Annotated[Path, typer.Argument(help="A file written by `housestyle db backup`.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a store that already holds data.")] = False,
    trust_unsealed: Annotated[bool, typer.Option(
        "--trust-unsealed", help="Restore a file whose seal is missing or does not verify with this installation's "
        "backup key (an older or foreign backup); the file checks still run.")] = False,
) -> None:
    """Replace the store with a backup, whole or not at all (stop `housestyle serve` first).

    Refuses a file without a seal this installation's backup key verifies (unless --trust-unsealed), a file that is
    not a HouseStyle backup, and a store that already holds data unless --force. An older backup is upgraded to the
    current schema.
    """
    from collector.backup import restore_store
    from collector.backup_seal import backup_key

    settings = get_settings()
    if trust_unsealed:
        typer.echo(f"warning: restoring {path} without verifying its seal (--trust-unsealed): only the file checks "
                   "stand between this file and the store", err=True)
    summary = restore_store(path, settings.resolved_database_url, key=backup_key(settings.home, create=False),
                            force=force, trust_unsealed=trust_unsealed)
    typer.echo(f"restored {summary.store} from {summary.path} ({summary.conversations} conversations, "
               f"schema {summary.revision} upgraded to {db.current_revision(get_settings().resolved_database_url)})")


def redact_command() -> None:
    """Redact personal data in every conversation not redacted yet (back-fills; `serve` does it as messages arrive).

    Each conversation is redacted whole: one value, one placeholder across its turns (<PERSON_1>, <ORDER_ID_1>...).
    With HOUSESTYLE_RAW_RETENTION_DAYS set, raw text older than that is then replaced by its redacted form.
    """
    redact_store(entry_settings())


def forget_command(
    email: Annotated[str | None, typer.Option(help="The customer's email address.")] = None,
    phone: Annotated[str | None, typer.Option(help="The customer's phone number, in any format.")] = None,
    conversation: Annotated[str | None, typer.Option(help="A conversation's id (its external id, or store id).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be deleted and why; delete nothing.")] = False,
) -> None:
    """Erase a customer: delete their conversations, drafts and reviews from the store, in one transaction.

    An email matches only as a whole address (case aside), a phone only as the same number once parsed
    (libphonenumber, national numbers read in HOUSESTYLE_PHONE_REGION): run --dry-run first to see what and why.

    Prints which adapter versions were trained on them (retire or retrain those); the next export and refresh no
    longer include them. The erasure is audit-logged without the personal value itself.
    """
    from collector.pii.erasure import describe, forget

    settings = entry_settings()
    result = forget(settings.resolved_database_url, actor=default_actor(), dry_run=dry_run, email=email,
                    phone=phone, conversation=conversation, region=settings.phone_region)
    typer.echo(describe(result))


def export_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write: train, validation and test splits plus manifest.json.")],
    format: Annotated[str, typer.Option(
        "--format", help="chat | prompt-completion | hf | dpo (agent's text over the draft it replaced) | "
                         "kto (each draft and reply labelled wanted or not)")] = "chat",
    since: Annotated[datetime | None, typer.Option(help="Only conversations started at or after this time (UTC).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Only conversations started before this time (UTC).")] = None,
    channel: Annotated[list[str] | None, typer.Option(help="Only these channels (repeat the option).")] = None,
    decisions: Annotated[str | None, typer.Option(
        help="Review decisions to keep, comma separated (default approved,edited; dpo and kto: all three).")] = None,
    redact: Annotated[bool, typer.Option(help="Replace PII with placeholders (--no-redact: raw personal data, CLI only).")] = True,
    dedup: Annotated[bool, typer.Option(help="Drop exact and near-duplicate conversations.")] = True,
    holdout_after: Annotated[
        datetime | None, typer.Option(help="Conversations started at or after this time all go to the test split.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic train/validation/test split.")] = 0,
    brand: BrandOption = None,
) -> None:
    """Write reviewed conversations as training data: the agent's final text replaces the draft.

    Rejected turns are dropped with the customer message they answered; the company system prompt is applied.
    A manifest (counts, what was dropped and why, content hash) is written beside the export. One brand's
    conversations only, with its system prompt.
    """
    from collector.export import export_dataset, export_options

    options = export_options(
        format=format,
        out=out,
        since=since,
        until=until,
        channels=channel or [],
        **({"decisions": [d.strip() for d in decisions.split(",") if d.strip()]} if decisions is not None else {}),
        redact=redact,
        dedup=dedup,
        holdout_after=holdout_after,
        seed=seed,
    )
    if not redact:  # said loudly: raw emails, phone numbers and names go to disk
        typer.secho(f"warning: writing UNREDACTED personal data (names, emails, phone numbers) to {out}; the files "
                    "are readable by you only (0600); delete them when done", fg=typer.colors.RED, bold=True, err=True)
    manifest = export_dataset(options, settings=entry_settings(brand))
    typer.echo(manifest.summary())


def register(app: typer.Typer) -> None:
    """Attach the collector's commands to the root CLI."""
    from collector.brand_commands import brands_app

    app.add_typer(db_app, name="db")
    app.add_typer(brands_app, name="brands")
    app.command("import")(import_command)
    app.command("export")(export_command)
    app.command("redact")(redact_command)
    app.command("forget")(forget_command)
