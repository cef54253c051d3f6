"""Module hygiene: the packages import each other only downwards (stacking is the library; experiments and analysis
build on it; the `stacking` CLI reaches them only through their own `cli` modules), no import cycle among the
project's modules (lazy imports inside functions included), every module short enough to read top to bottom
(≲ 600 lines, the size of nanoGPT's model.py and train.py), and every function short enough to hold in one's head
(≤ 100 lines: a longer one is split into named steps)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stacking", "experiments", "analysis")
MAX_LINES = 600
MAX_FUNCTION_LINES = 100
# Which packages each package may import. stacking is the library at the bottom; experiments (grid → runs →
# results.csv) and analysis (results → tables, fits, figures) each build on it and meet only through the files a
# sweep writes.
MAY_IMPORT = {
    "stacking": {"stacking"},
    "experiments": {"stacking", "experiments"},
    "analysis": {"stacking", "analysis"},
}
# The one way up: `stacking …`'s dispatch table names each package's own CLI module (which imports stacking.cli's
# parser back: a cycle by design, closed only when a command runs, so not counted as one).
ENTRY_POINTS = {"stacking.cli": {"experiments.cli", "analysis.cli"}}


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every .py file of the packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def import_graph(mods: dict[str, Path], *, by_name: bool = False) -> dict[str, set[str]]:
    """Module → the project modules it imports anywhere in its body (top level, functions, try blocks).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``. The implicit import
    of a parent package by its submodules is not an edge: a package ``__init__`` that re-exports its submodules is
    not a cycle. ``by_name``: a string that is a submodule's dotted name is an edge too — the modules imported at
    run time by name (``_lazy("analysis.cli", "report_main")``, ``importlib.import_module("…")``, a forkserver's
    preload list). A bare package name is not: ``"stacking"`` is also the wandb project's."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if by_name and isinstance(node, ast.Constant) and isinstance(node.value, str):
                targets = [node.value] if "." in node.value and node.value in mods else []
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:  # `import a.b.c` of a non-module attribute: its module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """The edges ``a -> b`` that go where `MAY_IMPORT` and `ENTRY_POINTS` do not allow."""
    return [
        f"{mod} -> {t}"
        for mod, edges in sorted(graph.items())
        for t in sorted(edges)
        if t.split(".")[0] not in MAY_IMPORT[mod.split(".")[0]] and t not in ENTRY_POINTS.get(mod, ())
    ]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None."""
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_reports_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layering_violations_name_each_edge():
    graph = {
        "stacking.cli": {"analysis.cli", "analysis.plan", "stacking.train"},
        "stacking.data": {"experiments.cli"},
        "experiments.planner": {"stacking.config", "analysis.sweep"},
        "analysis.report": {"stacking.models"},
    }
    assert layering_violations(graph) == [
        "experiments.planner -> analysis.sweep",
        "stacking.cli -> analysis.plan",
        "stacking.data -> experiments.cli",
    ]


def test_packages_import_only_downwards():
    graph = import_graph(modules(), by_name=True)
    # the walk sees the dispatch table's strings and the forkserver's preload list
    assert {"analysis.cli", "experiments.cli", "stacking.growth.cli"} <= graph["stacking.cli"]
    assert "stacking.train" in graph["experiments.local"]
    bad = layering_violations(graph)
    assert not bad, (
        "imports against the layering (stacking imports neither experiments nor analysis; they do not "
        "import each other; stacking/cli.py reaches them only through experiments.cli and analysis.cli): "
        + "; ".join(bad)
    )


def test_no_import_cycle():
    mods = modules()
    graph = import_graph(mods)
    assert "experiments.cli" in graph and "analysis.speedup" in graph["analysis"]  # the walk sees the packages
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_modules_are_short():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def long_functions(tree: ast.AST, limit: int) -> dict[str, int]:
    """``function`` / ``Class.method`` / ``outer.inner`` → its length in lines (``def`` to its last line), for each
    one over ``limit``."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not isinstance(child, ast.ClassDef) and (n := child.end_lineno - child.lineno + 1) > limit:
                    out[prefix + child.name] = n
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def test_long_functions_are_found():
    src = "class A:\n    def f(self):\n" + "        x = 1\n" * 3 + "def g():\n    def h():\n        pass\n"
    assert long_functions(ast.parse(src), 3) == {"A.f": 4}
    assert long_functions(ast.parse(src), 2) == {"A.f": 4, "g": 3}


def test_functions_are_short():
    long = {
        f"{path.relative_to(ROOT)}::{fn}": n
        for path in modules().values()
        for fn, n in long_functions(ast.parse(path.read_text(), str(path)), MAX_FUNCTION_LINES).items()
    }
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): {long}"


def imported_names(tree: ast.AST, module: str) -> set[str]:
    """The names taken by ``from MODULE import …`` anywhere in a file."""
    return {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == module for a in n.names}


def test_one_import_path_per_name():
    """stacking.train's names are its own (``__all__``): RunConfig, the errors, the checkpoint reader are imported
    from the modules that define them, in code, tests and benchmarks alike."""
    import stacking.train

    own = set(stacking.train.__all__)
    files = [*modules().values(), *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in imported_names(ast.parse(path.read_text(), str(path)), "stacking.train") - own
    }
    assert not wrong, f"import these from their defining module, not stacking.train: {sorted(wrong)}"
