"""The package's shape, checked from its own source: no import cycles, data flowing one way
through the layers, and no module so long that it must be doing several jobs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import m2cofs

SRC = Path(m2cofs.__file__).resolve().parent.parent
PACKAGE = SRC / "m2cofs"
MAX_LINES = 400

# data → models → training → inference → metrics → reporting → compare → commands: a module may
# import its own layer and those before it, never one after it (lazy imports inside functions too).
LAYERS: list[tuple[str, ...]] = [
    ("m2cofs", "m2cofs.errors", "m2cofs.io", "m2cofs.devices", "m2cofs.models.spec", "m2cofs.data", "m2cofs.previews"),
    ("m2cofs.models", "m2cofs.config", "m2cofs.checkpoint", "m2cofs.losses", "m2cofs.synthetic"),
    ("m2cofs.training", "m2cofs.baselines"),
    ("m2cofs.inference", "m2cofs.bundled"),
    ("m2cofs.metrics",),
    ("m2cofs.reporting", "m2cofs.evaluation"),
    ("m2cofs.compare",),
    ("m2cofs.commands", "m2cofs.cli", "m2cofs.__main__"),
]


# Known, dated exceptions still to fix: the tests fail when one is fixed too, so that the entry
# is removed then. None at present.
PENDING_UPWARD_IMPORTS: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _known(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _loaded_by(name: str) -> set[str]:
    """What importing ``name`` loads: the module and every package above it."""
    target = _known(name)
    if target is None:
        return set()
    parts = target.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def import_graph(lazy: bool = True) -> dict[str, set[str]]:
    """Module → the m2cofs modules its import statements load (at module level only, or
    anywhere in the file with ``lazy``)."""
    graph: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        nodes = ast.walk(tree) if lazy else iter(tree.body)
        out: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            else:
                continue
            for name in names:
                if name == "m2cofs" or name.startswith("m2cofs."):
                    out |= _loaded_by(name)
        out -= {mod, *_loaded_by(mod)}  # a module's own packages are loaded before it anyway
        graph[mod] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def layer_of(mod: str) -> int:
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > best:
                best, rank = len(n), i
    assert rank is not None, f"{mod} belongs to no layer: add it to LAYERS in {__file__}"
    return rank


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_m2cofs():
    graph = import_graph(lazy=True)
    assert "m2cofs.evaluation" in graph and graph["m2cofs.cli"], "the import graph came out empty"
    assert cycles(graph) == []


def test_data_flows_one_way_through_the_layers():
    graph = import_graph(lazy=True)
    upward = {(m, t) for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m)}
    wrong = sorted(f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})" for m, t in upward - PENDING_UPWARD_IMPORTS)
    assert wrong == []
    assert upward >= PENDING_UPWARD_IMPORTS, "a pending exception is fixed: remove it from PENDING_UPWARD_IMPORTS"


def test_nothing_in_the_library_calls_the_command_line():
    callers = sorted(m for m, targets in import_graph().items()
                     if "m2cofs.cli" in targets and not m.startswith(("m2cofs.commands", "m2cofs.cli", "m2cofs.__main__")))
    pending = sorted(m for m, t in PENDING_UPWARD_IMPORTS if t == "m2cofs.cli")
    assert callers == pending


def _long_modules() -> list[tuple[Path, int]]:
    return [(p, n) for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]


def test_long_modules_are_explained_in_their_folder_readme():
    unexplained = []
    for path, n in _long_modules():
        readme = path.parent / "README.md"
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        if f"`{path.name}`" not in text:
            unexplained.append(f"{path.relative_to(SRC)} ({n} lines): say why in {readme.relative_to(SRC)}")
    assert unexplained == []
