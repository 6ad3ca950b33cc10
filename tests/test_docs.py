"""The README a newcomer reads stays true: every setting documented, the two set-up commands, the CLI it shows."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from core.settings import Settings
from plugin.cli import app

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_configuration_reference() -> None:
    missing = [name for name in Settings.model_fields if f"`HOUSESTYLE_{name.upper()}`" not in README]
    assert missing == []


def test_the_configuration_reference_says_what_each_setting_says_of_itself() -> None:
    lines = {line.split("`")[1]: line for line in README.splitlines() if line.startswith("| `HOUSESTYLE_")}
    stale = [name for name, field in Settings.model_fields.items()
             if not lines.get(f"HOUSESTYLE_{name.upper()}", "").endswith(f"| {field.description.replace('|', chr(92) + '|')} |")]
    assert stale == []


def test_set_up_is_exactly_make_demo_and_make_test() -> None:
    section = README.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)", section, flags=re.M)
    assert commands == ["make demo", "make test"]


def test_every_command_the_readme_shows_exists() -> None:
    section = README.split("## The command line", 1)[1].split("\n## ", 1)[0]
    for line in re.findall(r"^housestyle ([\w ]+?)(?:\s{2,}|\s+--|\s+[A-Z\[]|$)", section, flags=re.M):
        words = line.split()[:2] if line.split()[0] in {"base", "keys", "db", "adapters"} else line.split()[:1]
        result = CliRunner().invoke(app, [*words, "--help"])
        assert result.exit_code == 0, (words, result.output)
