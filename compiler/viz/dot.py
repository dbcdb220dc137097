"""Graphviz DOT source (``dot -Tpng`` or any Graphviz viewer draws it)."""

from __future__ import annotations

from html import escape

from .view import HTTP_COLOR, View

_FONT = "Helvetica"


def render(view: View) -> str:
    """The graph as a left-to-right digraph; tensor edges dashed and coloured (NIXL red), labelled with their type
    and transport."""
    out = [
        f"// {view.caption}",
        f"digraph {_q(view.name)} {{",
        f'  graph [rankdir=LR, fontname="{_FONT}", fontsize=12, labelloc=t, label={_q(view.caption)}];',
        f'  node [shape=box, style="rounded,filled", fontname="{_FONT}", fontsize=11, margin="0.15,0.08"];',
        f'  edge [fontname="{_FONT}", fontsize=10, color="{HTTP_COLOR}", fontcolor="{HTTP_COLOR}"];',
    ]
    for n in view.nodes:
        label = "<br/>".join([f"<b>{escape(n.name)}</b>", *(escape(d) for d in n.details)])
        out.append(f'  {_q(n.name)} [label=<{label}>, fillcolor="{n.fill}", color="{n.border}"];')
    for e in view.edges:
        style = f', style=dashed, penwidth=2, color="{e.color}", fontcolor="{e.color}"' if e.is_tensor else ""
        out.append(f"  {_q(e.src)} -> {_q(e.dst)} [label={_q(e.label)}{style}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _q(text: str) -> str:
    """A double-quoted DOT ID."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
