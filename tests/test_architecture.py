"""Imports flow one way: core uses none of the others, collector only core, trainer and serving core and collector,
plugin all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
ALLOWED = {
    "core": {"core"},
    "collector": {"core", "collector"},
    "trainer": {"core", "collector", "trainer"},
    "serving": {"core", "collector", "serving"},
    "plugin": {"core", "collector", "trainer", "serving", "plugin"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_architecture_allows(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_packages(path) - ALLOWED[package]
    }
    assert offenders == {}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_module_says_what_it_is_for(package: str) -> None:
    undocumented = [str(path.relative_to(ROOT)) for path in (ROOT / package).rglob("*.py")
                    if path.stat().st_size and ast.get_docstring(ast.parse(path.read_text())) is None]
    assert undocumented == []


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports anywhere, inside functions too (a hidden import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    paths = [path for package in ALLOWED for path in (ROOT / package).rglob("*.py")]
    graph = {module_name(path): set() for path in paths}
    for path in paths:
        graph[module_name(path)] = imported_modules(path, set(graph)) - {module_name(path)}
    # a package's __init__ re-exporting its own modules is not a cycle: drop edges from a package to its children
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not t.startswith(name + ".")}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_cli_starts_without_loading_the_model_stack() -> None:
    """`housestyle keys create`, `stats`, `export`... answer in a second: torch and transformers load only for the
    commands that train, score or serve."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, plugin.cli; print(sorted({'torch', 'transformers', 'vllm'} & set(sys.modules)))"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=True,
    ).stdout.strip()
    assert loaded == "[]"
