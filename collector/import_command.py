"""`housestyle import` into a brand, and what the collector's commands share: --brand, who ran them."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from collector.brands import brand_id_of, entry_settings
from core.errors import InputError
from core.settings import Settings

if TYPE_CHECKING:
    from collector.importer import ImportReport

def default_actor() -> str:
    """Who runs this command, for the audit log."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


BrandOption = Annotated[
    str | None, typer.Option("--brand", help="The brand whose data this is (default HOUSESTYLE_BRAND: 'default'); "
                             "`housestyle brands list` shows them.")
]


def import_command(
    path: Annotated[Path | None, typer.Argument(help="OpenAI chat JSONL, prompt/completion JSONL or HouseStyle JSONL.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Load the bundled GadgetCorp sample data set.")] = False,
    business_sample: Annotated[bool, typer.Option(
        "--business-sample", help="Load the bundled second brand's conversations (GadgetCorp's business desk, a "
        "formal voice), e.g. into a brand made with `housestyle brands create`.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse the whole file if any line is bad.")] = False,
    channel: Annotated[
        str, typer.Option(help="Channel recorded on conversations whose lines name none (HouseStyle lines may).")
    ] = "import",
    redact: Annotated[
        bool | None,
        typer.Option("--redact/--no-redact", help="Redact what was imported now (default: HOUSESTYLE_REDACT_AT_INGEST); "
                     "--no-redact leaves it to `housestyle redact` or the service's worker."),
    ] = None,
    brand: BrandOption = None,
) -> None:
    """Load conversations from a file; each assistant reply counts as reviewed by an agent.

    Replies are approved unless a HouseStyle line says edited or rejected; system messages are dropped.

    Bad lines are listed with their line number and reason; good lines still land unless --strict.
    Importing the same conversations twice adds nothing twice.
    """
    from collector.importer import ImportRefused, import_file
    from collector.sample import BUSINESS_SAMPLE_PATH, SAMPLE_PATH

    if sum((sample, business_sample, path is not None)) != 1:
        raise InputError("give one of: a PATH to import, --sample or --business-sample")
    bundled = SAMPLE_PATH if sample else BUSINESS_SAMPLE_PATH if business_sample else None
    settings = entry_settings(brand)
    into = brand_id_of(settings)
    try:
        report = import_file(
            bundled or path, url=settings.resolved_database_url, strict=strict, channel=channel,
            source="sample" if bundled else "import", max_message_chars=settings.max_message_chars, brand_id=into,
            max_line_bytes=settings.import_max_line_bytes,
        )
    except ImportRefused as refused:
        echo_bad_lines(refused.report)
        raise
    echo_bad_lines(report)
    typer.echo(
        f"imported {report.added} conversations ({report.messages} messages), "
        f"{report.duplicates} already present, {len(report.errors)} bad lines"
    )
    if report.added and (settings.redact_at_ingest if redact is None else redact):
        redact_store(settings, err=True)  # stdout keeps the import's one summary line


def redact_store(settings: Settings, *, err: bool = False) -> None:
    """Redact every conversation with new text, with a progress line; then apply the raw-text retention period."""
    from rich.console import Console

    from collector.pii.erasure import purge_expired_raw
    from collector.pii.ingest import redact_everything, redactor_for

    url = settings.resolved_database_url
    console = Console(stderr=True)
    with console.status("loading the PII models…"):
        redactor = redactor_for(settings)
    with console.status("redacting personal data…") as status:
        done = redact_everything(url, redactor, on_pass=lambda step: status.update(
            f"redacting personal data… {step.conversations} more conversations"))
    typer.echo(f"redacted {done.conversations} conversations ({done.texts} texts)", err=err)
    if purged := purge_expired_raw(url, settings, actor=default_actor()):
        typer.echo(f"raw text of {purged} conversations older than {settings.raw_retention_days:g} days replaced by "
                   "its redacted form", err=err)


def echo_bad_lines(report: ImportReport, shown: int = 20) -> None:
    """Bad lines on stderr, the first few only: a broken file should not flood the terminal."""
    for error in report.errors[:shown]:
        typer.echo(f"line {error.line}: {error.reason}", err=True)
    if len(report.errors) > shown:
        typer.echo(f"... and {len(report.errors) - shown} more bad lines", err=True)
