"""The layers hold: no import circle between policygrad's modules, no private name imported across.

Read from the source with ``ast`` (nothing is imported):

* (a) the module-level imports (those run when a module is imported; ``if TYPE_CHECKING:`` blocks
  and imports inside functions excluded) form no circle;
* (b) no module imports a ``_private`` name from another policygrad module (anywhere in it,
  function bodies included): what one module needs of another is public.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "policygrad"

# Known offenders. Empty these lists as they go; nothing new belongs here.
KNOWN_CIRCLES: list[frozenset[str]] = []
KNOWN_PRIVATE_IMPORTS: list[tuple[str, str, str]] = []

# The layers, lowest first. A module imports (at module level or inside a function) only modules of
# lower layers, or modules of its own package (policies.heads -> policies.mlp); ARCHITECTURE.md
# draws the same picture.
LAYERS: list[list[str]] = [
    ["version", "errors", "numeric", "seeding"],  # foundations
    ["files"],  # reading files that may come from someone else
    ["types", "returns", "trust_region", "distributions", "normalize", "logging", "threads"],  # data, pure math, state
    ["losses", "policies", "tabular", "space_tasks", "plots", "sequence"],
    ["backends", "verify", "tasks", "checkpoint", "atari"],
    ["verify_lagged"],  # off-policy estimators, built on verify
    ["rollout", "envs"],
    ["algorithms", "evaluation", "export"],
    ["runconfig"],
    ["distributed"],  # rollout workers on Ray: stand in for training's collector
    ["training"],
    ["rundir"],
    ["sequence_training"],  # the sequence runs: rundir's lock and set-up, training's signals
    ["seeds", "api"],
    ["cli"],  # commands may go through the Python API (policygrad export loads a run as pg.load does)
    [""],  # the package itself (what `import policygrad` gives)
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name an ``ImportFrom`` in ``module`` reads from."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.stmt) -> list[str]:
    """The policygrad modules that ``node`` (an import statement) loads."""
    found: list[str] = []
    if isinstance(node, ast.Import):
        found = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        source = _absolute(module, node)
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            found.append(sub if sub in MODULES else source)
    return [name for name in found if name in MODULES and name != "policygrad"]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(module: str) -> set[str]:
    """Modules imported when ``module`` is: its top-level statements, through if/try blocks."""
    edges: set[str] = set()
    statements = list(ast.parse(MODULES[module].read_text(encoding="utf-8")).body)
    while statements:
        node = statements.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            edges.update(_targets(module, node))
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                statements += node.body
            statements += node.orelse
        elif isinstance(node, ast.Try):
            statements += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                statements += handler.body
        elif isinstance(node, ast.With):
            statements += node.body
    edges.discard(module)
    return edges


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_parser_sees_the_package() -> None:
    assert {"policygrad.cli", "policygrad.training", "policygrad.evaluation", "policygrad.runconfig",
            "policygrad.rundir", "policygrad.threads", "policygrad.algorithms.base"} <= set(MODULES)
    assert "policygrad.runconfig" in _module_level_imports("policygrad.training")
    assert "policygrad.rollout" in _module_level_imports("policygrad.evaluation")


def test_no_import_circle_at_import_time() -> None:
    graph = {name: _module_level_imports(name) for name in MODULES}
    circles = _circles(graph)
    unexpected = [sorted(c) for c in circles if c not in KNOWN_CIRCLES]
    assert not unexpected, f"modules that import each other at import time: {unexpected}"


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(graph) == [frozenset({"a", "b", "c"})]


def test_no_private_name_is_imported_across_modules() -> None:
    offenders = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _absolute(module, node)
            if not source.startswith("policygrad") or source == module:
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__") and (module, source, name) not in KNOWN_PRIVATE_IMPORTS:
                    offenders.append(f"{module}:{node.lineno} imports {source}.{name}")
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


@pytest.mark.parametrize("known", KNOWN_PRIVATE_IMPORTS)
def test_the_allow_list_names_only_live_offenders(known: tuple[str, str, str]) -> None:
    """An entry whose import is gone must leave the list, so that the list only shrinks."""
    module, source, name = known
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    present = any(
        isinstance(node, ast.ImportFrom) and _absolute(module, node) == source and name in {a.name for a in node.names}
        for node in ast.walk(tree)
    )
    assert present, f"{module} no longer imports {source}.{name}: remove it from KNOWN_PRIVATE_IMPORTS"


def _unit(module: str) -> str:
    """The top-level unit of a module: ``policygrad.policies.heads`` -> ``policies``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    unit = _unit(module)
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"{module} is in no layer: add its unit {unit!r} to LAYERS")


def _all_imports(module: str) -> set[str]:
    """Every policygrad module ``module`` imports, anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(_targets(module, node))
            if isinstance(node, ast.ImportFrom) and not node.level and node.module == "policygrad":
                found.add("policygrad")  # the package itself, the top layer
    found.discard(module)
    return found


def test_every_import_points_down_the_layers() -> None:
    upward = []
    for module in MODULES:
        for target in _all_imports(module):
            if target not in MODULES or _unit(target) == _unit(module):
                continue
            if _layer(target) >= _layer(module):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that do not point to a lower layer: " + ", ".join(sorted(upward))


def test_the_layer_check_catches_an_upward_import() -> None:
    # The check itself can fail: the rollout importing the training loop would be caught.
    assert _layer("policygrad.training") > _layer("policygrad.rollout")
    assert _layer("policygrad.backends.numpy") < _layer("policygrad.algorithms.ppo")
    assert _layer("policygrad.types") < _layer("policygrad.losses") < _layer("policygrad.backends")
