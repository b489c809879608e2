"""The package's layering, read from the source (imports inside functions included, as they run too).

Lower layers never import upper ones: errors, config and requirements are the base; data, models, maps and
evaluation sit on them; the steps, the runner (``pipeline``), preflight, the sweeps and the commands sit on top
(``docs/design.md``, "Layers"). The middle packages are in an order (:data:`MIDDLE`): each imports only the ones
before it, so no two packages import each other. There is no import cycle anywhere, not even one hidden inside a
function.
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
    "regionaldiff.regions": {"regionaldiff.errors"},  # the region-map grid, read by data, encoder, ldm, evaluation
}
#: the layers below the runner, and what none of them may import
LOWER = ("data", "encoder", "ldm", "maps", "evaluation", "components", "validation", "tracking", "artifacts")
UPPER = ("steps", "runner", "preflight", "sweeps", "cli", "commands", "reconstruction", "__main__")
#: the middle packages, lowest first: each may import only the ones before it (read from what the code imports:
#: tracking imports none of the others; maps reads the data's types; evaluation scores maps and data; the encoder is
#: calibrated with evaluation's region metrics; the LDM is conditioned on the encoder)
MIDDLE = ("tracking", "data", "maps", "evaluation", "encoder", "ldm")


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


def package_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(importing package, imported package) -> the module imports behind it, for the package's top-level parts
    (``regionaldiff.ldm.model`` is part ``ldm``, ``regionaldiff.runner`` part ``runner``)."""

    def part(name: str) -> str:
        return name.split(".")[1] if name.count(".") else ""

    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for name, deps in graph.items():
        for dep in deps:
            if part(name) and part(dep) and part(name) != part(dep):
                edges.setdefault((part(name), part(dep)), []).append((name, dep))
    return edges


def test_the_middle_packages_import_only_the_ones_below_them(graph):
    wrong = {
        (a, b): sorted(modules)
        for (a, b), modules in package_edges(graph).items()
        if a in MIDDLE and b in MIDDLE and MIDDLE.index(b) > MIDDLE.index(a)
    }
    assert wrong == {}, "a middle package imports one above it in MIDDLE"


def two_way_pairs(edges: dict[tuple[str, str], list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """The package pairs that import each other, each once (sorted)."""
    return sorted((a, b) for (a, b) in edges if (b, a) in edges and a < b)


def test_a_two_way_pair_is_found():
    fake = {
        "regionaldiff.encoder.calibration": {"regionaldiff.ldm.conditioning"},
        "regionaldiff.ldm.module": {"regionaldiff.encoder.base", "regionaldiff.regions"},
        "regionaldiff.evaluation.known_truth": {"regionaldiff.data.base"},
    }
    assert two_way_pairs(package_edges(fake)) == [("encoder", "ldm")]


def test_no_two_packages_import_each_other(graph):
    edges = package_edges(graph)
    both_ways = two_way_pairs(edges)
    assert both_ways == [], {pair: edges[pair] + edges[pair[::-1]] for pair in both_ways}
