"""The `housestyle` command: one CLI that gathers every package's commands."""

from __future__ import annotations

import signal
import sys

import typer

from collector.cli import register as register_collector
from collector.coverage.cli import register as register_coverage
from collector.knowledge.cli import register as register_knowledge
from collector.memory.cli import register as register_memory
from core.errors import HouseStyleError
from core.files import keep_files_private
from plugin.commands import register as register_plugin
from plugin.demo import register as register_demo
from plugin.evaluation import register as register_eval
from plugin.loop.commands import register as register_loop
from serving.cli import register as register_serving
from trainer.cli import register as register_trainer

app = typer.Typer(
    name="housestyle",
    help=(
        "HouseStyle keeps your support assistant speaking in your company's voice.\n\n"
        "It records conversations and what agents did with the assistant's drafts, fine-tunes a LoRA adapter on "
        "the approved and corrected replies, and hot-swaps it into vLLM.\n\n"
        "State lives under HOUSESTYLE_HOME (default ./.housestyle); HOUSESTYLE_DATABASE_URL points the store at "
        "Postgres."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

register_collector(app)
register_knowledge(app)
register_memory(app)
register_coverage(app)
register_serving(app)
register_plugin(app)
register_trainer(app)
register_loop(app)
register_demo(app)
register_eval(app)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # like Ctrl-C: `finally` blocks run, locks are released, child processes are stopped


def main() -> None:
    """Console entry point: user-fixable errors become one line on stderr and exit code 1, never a traceback.

    SIGTERM (`timeout`, systemd, docker stop) stops a command as Ctrl-C does, so nothing is left behind: the demo's
    service and vLLM stop, a refresh closes its run and lock (`serve` handles the signal its own way)."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    keep_files_private()  # exports, adapters, knowledge copies, logs: 0600 / 0700 (SECURITY.md)
    try:
        app()
    except HouseStyleError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
