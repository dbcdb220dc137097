"""Mermaid flowchart (renders on GitHub and in most Markdown viewers)."""

from __future__ import annotations

import re

from .view import ROLE_STYLE, View


def render(view: View) -> str:
    """The graph as a Mermaid ``flowchart LR``; NIXL edges dotted and red, labelled with their type."""
    out = [f"%% {view.caption}", "flowchart LR"]
    for n in view.nodes:
        label = "<br/>".join([f"<b>{_text(n.name)}</b>", *(_text(d) for d in n.details)])
        out.append(f'  {_id(n.name)}["{label}"]:::{n.role}')
    nixl = []
    for i, e in enumerate(view.edges):
        arrow = "-.->" if e.is_nixl else "-->"
        out.append(f'  {_id(e.src)} {arrow}|"{_text(e.label)}"| {_id(e.dst)}')
        if e.is_nixl:
            nixl.append(i)
    for role in sorted({n.role for n in view.nodes}):
        _, fill, border = ROLE_STYLE[role]
        out.append(f"  classDef {role} fill:{fill},stroke:{border},color:#202124")
    if nixl:
        out.append(f"  linkStyle {','.join(map(str, nixl))} stroke:{view.edges[nixl[0]].color},stroke-width:2px")
    return "\n".join(out) + "\n"


def _id(name: str) -> str:
    # Prefixed: Mermaid keywords such as "end" break a chart when used as ids.
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _text(text: str) -> str:
    """Escape for a quoted Mermaid label (its own entity syntax, '#' first)."""
    for raw, entity in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, entity)
    return text
