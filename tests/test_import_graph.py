"""The package's module-level imports form an acyclic graph (imports flow one way).

Every module of ``snn_encodings`` and of ``adapters`` (installed as ``snn_encodings.adapters``)
is parsed with :mod:`ast`; an edge ``a -> b`` means that importing ``a`` executes an import of
``b`` at module level (``if TYPE_CHECKING:`` blocks never run and are left out; so is ``a``'s
own parent package, which Python has already started importing). The stricter graph adds the
deferred imports inside functions: a cycle there is still a cycle in the design. A cycle is
reported as the modules on it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"snn_encodings": ROOT / "snn_encodings", "snn_encodings.adapters": ROOT / "adapters"}

KNOWN_CYCLES: frozenset[tuple[str, str]] = frozenset(
    {
        # the closed-form Quartz pass and the Quartz rule import each other (the rule calls the
        # pass, the pass reads the rule's layers); being separated in the conversion speed work
        ("snn_encodings.conversion.rules.quartz", "snn_encodings.conversion.quartz_fast"),
    }
)
"""Deferred imports (inside functions) that close a cycle being removed by other changes, as
``(importer, imported)``; delete an entry when its cycle is gone."""


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


def _statements(body: list[ast.stmt], deferred: bool) -> Iterator[ast.stmt]:
    """The statements run when the module is imported (with ``deferred``: all of them)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not deferred:
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _statements(node.orelse, deferred)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _statements(inner, deferred)


def _imports(name: str, path: Path, modules: dict[str, Path], deferred: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _statements(tree.body, deferred):
        if isinstance(node, ast.Import):
            found = {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found = {base} | {f"{base}.{alias.name}" for alias in node.names}
        else:
            continue
        if not any((name, target) in KNOWN_CYCLES for target in found):
            targets |= found
    # importing a.b.c runs the packages a and a.b first, except the importer's own ancestors,
    # which Python has already started importing
    parents = {t.rsplit(".", n)[0] for t in targets for n in range(1, t.count(".") + 1)}
    return {
        t for t in targets | parents if t in modules and not f"{name}.".startswith(f"{t}.")
    }


def import_graph(*, deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (``deferred``: anywhere)."""
    modules = _modules()
    return {name: _imports(name, path, modules, deferred) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "snn_encodings.adapters.spikingjelly.kernels" in graph
    assert "snn_encodings.specs.base" in graph["snn_encodings.specs.icrate"]
    assert "snn_encodings.encoding" in graph["snn_encodings.conversion.rules.base"]


def test_finds_a_cycle_in_a_toy_graph() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("deferred", [False, True], ids=["module level", "with deferred"])
def test_imports_are_acyclic(deferred: bool) -> None:
    cycles = find_cycles(import_graph(deferred=deferred))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_known_cycles_name_existing_imports() -> None:
    graph = import_graph(deferred=True)
    modules = _modules()
    for importer, imported in KNOWN_CYCLES:
        assert importer in graph and imported in modules


def test_the_record_module_imports_only_the_specs() -> None:
    imported = import_graph(deferred=True)["snn_encodings.encoding"]
    assert imported and all(m.startswith("snn_encodings.specs") for m in imported)
