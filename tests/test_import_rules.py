"""The import rules of docs/design.md, checked by parsing every module's imports."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# package prefix -> prefixes of ours it must not import
FORBIDDEN = {
    "graph": ("nodes", "compiler", "pipelines"),
    # The Plan and the shared settings are read by targets and by our processes: nothing of the
    # authoring layer comes with them.
    "graph.settings": ("graph.nodes", "graph.graph", "graph.spec", "graph.validation", "graph.checks", "graph.loader",
                       "graph.overrides", "graph.plan", "graph.errors", "nodes", "compiler", "pipelines"),
    "graph.plan": ("graph.nodes", "graph.graph", "graph.spec", "graph.validation", "graph.checks", "graph.loader",
                   "graph.overrides", "graph.errors", "nodes", "compiler", "pipelines"),
    "compiler.engines": ("graph", "nodes", "compiler.plan", "compiler.targets", "compiler.cli", "pipelines"),
    "compiler.targets": ("graph", "nodes", "compiler.engines", "compiler.plan", "compiler.cli", "pipelines"),
    "compiler.viz": ("nodes", "compiler.plan", "compiler.engines", "compiler.targets", "compiler.cli", "pipelines"),
    "compiler.plan": ("nodes", "compiler.targets", "compiler.cli", "pipelines"),
    "nodes": ("graph", "pipelines", "compiler"),
    "pipelines": ("nodes", "compiler"),
}
#: What a package may import although a rule above forbids the package it belongs to: the Plan and
#: the settings every layer shares.
ALLOWED = {
    "compiler.engines": ("graph.plan", "graph.settings"),
    "compiler.targets": ("graph.plan", "graph.settings"),
    "nodes": ("graph.plan", "graph.settings"),
    # The process that serves a node of your own runs your class: the authoring API comes with it.
    "nodes.custom": ("graph.plan", "graph.settings", "graph.custom", "graph.graph"),
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                name = ".".join(base + ([node.module] if node.module else []))
                found.append(name)
            elif node.module:
                found.append(node.module)
    return found


def _best(module: str, table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    best = ""
    for prefix in table:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return table.get(best, ())


def _rules_for(module: str) -> tuple[str, ...]:
    return _best(module, FORBIDDEN)


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in prefixes)


SOURCES = sorted(p for d in ("graph", "nodes", "compiler", "pipelines") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_forbidden_imports(path: pathlib.Path) -> None:
    module = _module_name(path)
    forbidden, allowed = _rules_for(module), _best(module, ALLOWED)
    bad = [name for name in _imports(path, module) if _matches(name, forbidden) and not _matches(name, allowed)]
    assert not bad, f"{module} imports {bad}; docs/design.md forbids {forbidden}"


def test_no_package_imports_another_that_imports_it_back() -> None:
    """graph <- compiler -> nodes -> graph.plan: the top-level packages form no loop."""
    ours = ("graph", "compiler", "nodes", "pipelines")
    edges: dict[str, set[str]] = {p: set() for p in ours}
    for path in SOURCES:
        module = _module_name(path)
        top = module.split(".")[0]
        edges[top] |= {n.split(".")[0] for n in _imports(path, module) if n.split(".")[0] in ours} - {top}
    for a in ours:
        for b in edges[a]:
            assert a not in edges[b], f"{a} imports {b} and {b} imports {a}"


def test_rule_catches_a_violation(tmp_path: pathlib.Path) -> None:
    """The parser really sees imports (a check that could never fail would prove nothing)."""
    fake = ROOT / "nodes" / "_fake_probe.py"
    module = _module_name(fake)
    tree_src = "from graph import Graph\nfrom ..compiler import plan\n"
    probe = tmp_path / "probe.py"
    probe.write_text(tree_src)
    names = []
    for node in ast.walk(ast.parse(tree_src)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    assert "graph" in names
    assert any(n == "graph" for n in names) and "graph" in _rules_for(module)
