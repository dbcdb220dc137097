"""DESIGN.md's import rules, checked by parsing every module's imports."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# package prefix -> prefixes of ours it must not import
FORBIDDEN = {
    "graph": ("nodes", "compiler", "pipelines"),
    "compiler.engines": ("graph", "nodes", "compiler.plan", "compiler.targets", "compiler.cli", "pipelines"),
    "compiler.targets": ("graph", "nodes", "compiler.engines", "compiler.plan", "compiler.cli", "pipelines"),
    "compiler.ir": ("graph", "nodes", "pipelines"),
    "compiler.viz": ("nodes", "compiler.plan", "compiler.engines", "compiler.targets", "compiler.cli", "pipelines"),
    "compiler.plan": ("nodes", "compiler.targets", "compiler.cli", "pipelines"),
    "nodes": ("graph", "pipelines", "compiler.plan", "compiler.engines", "compiler.targets", "compiler.cli",
              "compiler.transport"),
    "pipelines": ("nodes", "compiler"),
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


def _rules_for(module: str) -> tuple[str, ...]:
    best = ""
    for prefix in FORBIDDEN:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return FORBIDDEN.get(best, ())


SOURCES = sorted(p for d in ("graph", "nodes", "compiler", "pipelines") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_forbidden_imports(path: pathlib.Path) -> None:
    module = _module_name(path)
    forbidden = _rules_for(module)
    bad = [
        name for name in _imports(path, module)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert not bad, f"{module} imports {bad}; DESIGN.md forbids {forbidden}"


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
