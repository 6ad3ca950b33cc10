"""The manual stays true: README.md and docs/*.md name only settings, commands, flags, files and modules that exist,
the configuration reference lists every setting as it describes itself, and set-up is two commands."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from core.settings import Settings
from plugin.cli import app

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
MANUAL = {path.relative_to(ROOT).as_posix(): path.read_text() for path in [ROOT / "README.md",
                                                                          *sorted((ROOT / "docs").glob("*.md"))]}
CONFIGURATION = MANUAL["docs/configuration.md"]
# what else a newcomer reads beside the manual: its links and module names must hold too
DOCUMENTS = {**MANUAL, **{name: (ROOT / name).read_text()
                          for name in ("ARCHITECTURE.md", "SECURITY.md", "tests/README.md")}}
PACKAGES = ("core", "collector", "trainer", "serving", "plugin")
SETTING = re.compile(r"\bHOUSESTYLE_[A-Z0-9_]*[A-Z0-9]\b")
NOT_SETTINGS = {"HOUSESTYLE_TEST_PG_BIN"}  # the tests' own environment, read by tests/fixtures/stores.py


def test_the_manual_is_a_readme_and_one_page_per_topic() -> None:
    assert len(README.encode()) <= 15_000
    assert {"docs/configuration.md", "docs/loop.md", "docs/brands.md", "docs/knowledge.md", "docs/privacy.md",
            "docs/production.md", "docs/web-ui.md"} <= set(MANUAL)


def test_every_setting_is_in_the_configuration_reference() -> None:
    missing = [name for name in Settings.model_fields if f"`HOUSESTYLE_{name.upper()}`" not in CONFIGURATION]
    assert missing == []


def test_the_configuration_reference_says_what_each_setting_says_of_itself() -> None:
    lines = {line.split("`")[1]: line for line in CONFIGURATION.splitlines() if line.startswith("| `HOUSESTYLE_")}
    stale = [name for name, field in Settings.model_fields.items()
             if not lines.get(f"HOUSESTYLE_{name.upper()}", "").endswith(f"| {field.description.replace('|', chr(92) + '|')} |")]
    assert stale == []


def test_every_setting_the_documents_name_exists() -> None:
    known = {f"HOUSESTYLE_{name.upper()}" for name in Settings.model_fields} | NOT_SETTINGS
    unknown = sorted({f"{name}: {found}" for name, text in DOCUMENTS.items() for found in SETTING.findall(text)
                      if found not in known})
    assert unknown == []


def test_set_up_is_exactly_make_demo_and_make_test() -> None:
    section = README.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(make \w+)", section, flags=re.M)
    assert commands == ["make demo", "make test"]


# --- commands --------------------------------------------------------------------------------------------------------


def shown_commands() -> list[tuple[str, str]]:
    """(page, command line) for every `housestyle ...` the manual shows: code-block lines and inline code."""
    shown = []
    for name, text in MANUAL.items():
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
        for block in blocks:
            shown += [(name, line.split("  #")[0].strip())  # the comment after a command is not part of it
                      for line in block.splitlines() if line.startswith("housestyle ")]
        outside = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        shown += [(name, code) for code in re.findall(r"`(housestyle [^`]+)`", outside)]
    return shown


def flags_of(command: Any) -> set[str]:
    return {flag for param in command.params for flag in [*param.opts, *param.secondary_opts] if flag.startswith("-")}


def problems_of(line: str) -> list[str]:
    """What in one shown command line does not exist: a command, a subcommand or a flag; alternatives split by |."""
    tokens = shlex.split(line.replace("…", ""))[1:]
    alternatives: list[list[str]] = [[]]
    for token in tokens:
        if token == "|":
            alternatives.append([])
        else:
            alternatives[-1].append(token)
    group = command = typer.main.get_command(app)  # click's tree (typer's own copy of click)
    problems = []
    for index, words in enumerate(alternatives):
        if index and words and not words[0].startswith("-"):
            command = group  # `adapters list | promote V`: a sibling of the command before
        for word in words:
            flag = word.strip("[]").split("=")[0]
            if hasattr(command, "commands") and not flag.startswith("-"):  # a group: a subcommand comes next
                if word not in command.commands:
                    problems.append(f"no command {word!r}")
                    break
                group, command = command, command.commands[word]
            elif flag.startswith("--") and flag not in flags_of(command):
                problems.append(f"{command.name} has no {flag}")
    return problems


def test_every_command_the_manual_shows_exists_with_its_flags() -> None:
    shown = shown_commands()
    assert len(shown) > 60  # the checks below did run: the README's command list alone has 23
    wrong = [(page, line, problems) for page, line in shown if (problems := problems_of(line))]
    assert wrong == []


@pytest.mark.parametrize(("line", "problem"), [
    ("housestyle exprot --out DIR", "no command 'exprot'"),
    ("housestyle export --fromat chat", "export has no --fromat"),
    ("housestyle adapters list | promte V", "no command 'promte'"),
    ("housestyle db backup --out FILE | restore FILE --forse", "restore has no --forse"),
])
def test_a_command_or_flag_that_does_not_exist_is_caught(line: str, problem: str) -> None:
    assert problem in problems_of(line)


# --- links and module names ------------------------------------------------------------------------------------------


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_every_link_between_the_documents_resolves() -> None:
    broken = []
    for name, text in DOCUMENTS.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            file = (ROOT / name).parent / path if path else ROOT / name
            if not file.exists() or (anchor and anchor not in anchors(file.read_text())):
                broken.append(f"{name}: {target}")
    assert broken == []


def top_level_names(module: Path) -> set[str]:
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def exists(name: str) -> bool:
    """`collector.export.render`, `core/prompts.build_messages`, `plugin/loop/`, `serving/gateway.py`: a module,
    package or file of the tree, and the name after it one that module defines."""
    if (ROOT / name).exists():
        return True
    parts = name.replace("/", ".").removesuffix(".py").split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if base.is_dir() or module.is_file():
            rest = parts[cut:]
            return not rest or (module.is_file() and len(rest) == 1 and rest[0] in top_level_names(module))
    return False


MODULE_NAME = re.compile(r"(?<![\w./-])(?:%s)[./][\w./]*\w" % "|".join(PACKAGES))


def test_every_module_the_documents_name_exists() -> None:
    missing = sorted({f"{name}: {found}" for name, text in DOCUMENTS.items() for found in MODULE_NAME.findall(text)
                      if not exists(found)})
    assert missing == []


def test_a_module_that_does_not_exist_is_caught() -> None:
    assert exists("core.prompts.build_messages") and exists("core/prompts.build_messages") and exists("plugin/loop/")
    assert not exists("collector.db") and not exists("core.prompts.no_such_builder") and not exists("plugin/refresh.py")
