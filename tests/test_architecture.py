"""Imports flow one way: core uses none of the others, collector only core, trainer and serving core and collector,
plugin all; inside a package its layers (LAYERS) flow one way too; and no module imports itself back, counting the
package `__init__`s an import runs."""

from __future__ import annotations

import ast
from collections import deque
from functools import cache
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
# Layers inside a package, lowest first: a module (or package, with everything under it) may import its own layer and
# those listed before it, never one listed after. Modules not named here are not ranked.
LAYERS: dict[str, list[tuple[str, ...]]] = {
    "collector": [
        ("collector.knowledge",),  # product knowledge: documents, retrieval, what replies are grounded on
        ("collector.memory",),  # answer memory: past reviewed exchanges as examples (BM25 tokens from knowledge)
        ("collector.export",),  # training data; its exchanges carry knowledge passages
        ("collector.coverage",),  # what the knowledge base and the exports cover, and routing on the gaps
    ],
    "plugin": [
        (  # the reply path and the loop: what the service does, whoever asks
            "plugin.assistant",
            "plugin.reply",
            "plugin.reply_guard",
            "plugin.redrafter",
            "plugin.openai",
            "plugin.connectors",
            "plugin.loop",
            "plugin.evaluation",
            "plugin.metrics",
            "plugin.storable",
            "plugin.redaction_worker",
            "plugin.jsonlog",
        ),
        ("plugin.api",),  # the HTTP layer over it: routes, auth, bodies
        ("plugin.service", "plugin.commands", "plugin.demo", "plugin.cli"),  # what starts the service and the CLI
    ],
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, importer: str) -> set[str]:
    """Every dotted name `path` imports anywhere, inside functions too (a hidden import is still a dependency);
    `from a import b` gives both `a` and `a.b`, since b may be a module."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = importer.split(".")[: len(importer.split(".")) - node.level + is_package] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return found


def runs_when_imported(importer: str, name: str, known: set[str]) -> set[str]:
    """The project modules importing `name` from `importer` executes: the module itself and each parent package's
    `__init__` (`a.b.c` runs `a` and `a.b` first), except packages that contain the importer, which already run."""
    parts = name.split(".")
    prefixes = [".".join(parts[:end]) for end in range(1, len(parts) + 1)]
    return {
        module
        for module in prefixes
        if module in known and module != importer and not importer.startswith(module + ".")
    }


@cache
def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the project modules it runs by importing (see `runs_when_imported`), for every module under root's
    packages."""
    paths = {module_name(path, root): path for package in ALLOWED for path in (root / package).rglob("*.py")}
    known = set(paths)
    return {
        importer: set().union(*(runs_when_imported(importer, name, known) for name in imported_names(path, importer)))
        for importer, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One cycle, as "a -> b -> a", for each group of modules that import each other (a strongly connected component,
    found with Tarjan's algorithm); the shortest through the group's first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                connect(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while module not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return [" -> ".join(shortest_cycle(graph, group, min(group))) for group in groups]


def shortest_cycle(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """The shortest path from `start` back to itself inside `group` (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph[module] & group):
            if target == start:
                path = [module]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target not in came_from:
                came_from[target] = module
                queue.append(target)
    raise AssertionError(f"{start} is in a cycle it cannot be reached back from")


def layer_of(module: str, layers: list[tuple[str, ...]]) -> int | None:
    for rank, prefixes in enumerate(layers):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    return None


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_architecture_allows(package: str) -> None:
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in ALLOWED[package]
    )
    assert offenders == [], "imports the architecture does not allow:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layers_inside_a_package_import_only_downwards(package: str) -> None:
    layers = LAYERS[package]
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if (rank := layer_of(module, layers)) is not None
        for target in targets
        if (above := layer_of(target, layers)) is not None and above > rank
    )
    assert offenders == [], "imports of a higher layer (see LAYERS):\n" + "\n".join(offenders)


def test_the_layer_table_names_modules_that_exist() -> None:
    missing = [prefix for layers in LAYERS.values() for prefixes in layers for prefix in prefixes
               if prefix not in import_graph()]
    assert missing == []


def test_no_module_imports_itself_back_through_others() -> None:
    found = cycles(import_graph())
    assert found == [], "import cycles (an edge to a package runs its __init__):\n" + "\n".join(found)


def test_a_cycle_through_a_parent_packages_init_is_found(tmp_path: Path) -> None:
    """The cycle the check exists for: nothing imports a module that imports it back, but a.x's import of b.y runs
    b/__init__.py, which imports b.z, which imports a.x, hidden inside a function."""
    files = {
        "core/__init__.py": "",
        "core/a/__init__.py": "",
        "core/a/x.py": "from core.b.y import thing\n",
        "core/b/__init__.py": "from core.b.z import other\n",
        "core/b/y.py": "thing = 1\n",
        "core/b/z.py": "def other():\n    from core.a.x import thing\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cycles(import_graph(tmp_path)) == ["core.a.x -> core.b -> core.b.z -> core.a.x"]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_module_says_what_it_is_for(package: str) -> None:
    undocumented = [str(path.relative_to(ROOT)) for path in (ROOT / package).rglob("*.py")
                    if path.stat().st_size and ast.get_docstring(ast.parse(path.read_text())) is None]
    assert undocumented == []


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
