"""The package's layering, read from the source (imports inside functions included, as they run too).

Lower layers never import upper ones: errors, config and requirements are the base; data, models, maps and
evaluation sit on them; the steps, the runner (``pipeline``), preflight and the commands sit on top
(``docs/design.md``, "Layers"). There is no import cycle anywhere, not even one hidden inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import regionaldiff

PACKAGE_DIR = Path(regionaldiff.__file__).parent

#: what each base module may import from the package (nothing else)
BASE = {
    "regionaldiff.errors": set(),
    "regionaldiff.config": {"regionaldiff.errors"},
    "regionaldiff.requirements": {"regionaldiff.errors"},
}
#: the layers below the runner, and what none of them may import
LOWER = ("data", "encoder", "ldm", "maps", "evaluation", "components", "validation", "tracking", "artifacts")
UPPER = ("steps", "runner", "preflight", "cli", "commands", "reconstruction", "__main__")


def module_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source (top level or inside functions)."""
    modules: dict[str, Path] = {}
    for path in package_dir.rglob("*.py"):
        parts = (package, *path.relative_to(package_dir).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            deps.update(c for c in candidates if c in modules and c != name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each is an import cycle), by Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return module_graph(PACKAGE_DIR, "regionaldiff")


def test_the_graph_sees_the_package(graph):
    assert len(graph) > 60
    assert "regionaldiff.validation" in graph["regionaldiff.runner"]
    # an import inside a function counts: preflight's eval plan imports the backbones only when it runs
    assert "regionaldiff.evaluation.backbones" in graph["regionaldiff.preflight"]


def test_a_cycle_hidden_inside_a_function_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from pkg.a import f\n    return f\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert cycles(module_graph(pkg, "pkg")) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle(graph):
    assert cycles(graph) == []


@pytest.mark.parametrize("module", sorted(BASE))
def test_base_modules_import_only_the_base(graph, module):
    assert graph[module] <= BASE[module], f"{module} imports {sorted(graph[module] - BASE[module])}"


def test_lower_layers_import_nothing_from_the_runner_steps_preflight_or_commands(graph):
    def layer(name: str) -> str:
        return name.split(".")[1] if name.count(".") else ""

    wrong = {
        name: sorted(dep for dep in deps if layer(dep) in UPPER)
        for name, deps in graph.items()
        if layer(name) in LOWER
    }
    assert {name: deps for name, deps in wrong.items() if deps} == {}
