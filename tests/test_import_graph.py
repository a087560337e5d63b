"""The import graph of vitlens/: no cycles, and no import from a lower stage to a higher one.

An ``ast`` walk over every module (function-level imports included, since they run too).
Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, so those count as edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vitlens"
LOW = ("datasets", "models", "similarity", "capture")
HIGH = ("analyses", "widgets", "reproduce", "findings", "cli")


def _module_name(path: Path) -> str:
    parts = ["vitlens", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}

    def add(src: str, target: str) -> None:
        parts = target.split(".")
        # the source's own packages were imported before it ran: not edges
        ancestors = {".".join(src.split(".")[:i]) for i in range(1, src.count(".") + 1)}
        for i in range(1, len(parts) + 1):  # the packages on the way run too
            name = ".".join(parts[:i])
            if name in mods and name != src and name not in ancestors:
                graph[src].add(name)

    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(mod, alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                add(mod, base)
                for alias in node.names:  # "from . import cache" imports a module
                    add(mod, f"{base}.{alias.name}")
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _stage(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_walk_sees_the_package():
    graph = _graph()
    assert "vitlens.similarity.run" in graph and "vitlens.capture.gram" in graph
    assert "vitlens.capture.activations" in graph["vitlens.similarity.run"] or (
        "vitlens.capture" in graph["vitlens.similarity.run"])
    assert "vitlens.similarity._minibatch" in graph["vitlens.similarity.run"]


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles in vitlens/:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("low", LOW)
def test_lower_stages_never_import_higher_ones(low):
    graph = _graph()
    bad = sorted((src, dst) for src, dsts in graph.items() if _stage(src) == low
                 for dst in dsts if _stage(dst) in HIGH)
    assert not bad, f"vitlens.{low} imports a higher stage: {bad}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_named_after_a_team():
    bad = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if p.name.startswith("_b_")]
    assert not bad


def test_exactly_one_class_adds_minibatch_cka_batches():
    """Only :class:`vitlens.similarity.run.CKARun` feeds batches to an accumulator."""
    callers = []
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("update", "update_grams")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("engine", "eng", "acc", "real", "pooled", "cka",
                                               "ref", "trial")):
                callers.append((_module_name(path), node.lineno))
    assert {m for m, _ in callers} == {"vitlens.similarity.run"}, callers
