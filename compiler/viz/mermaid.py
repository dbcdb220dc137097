"""Mermaid flowchart (renders on GitHub and in most Markdown viewers)."""

from __future__ import annotations

import re

from .view import ROLE_STYLE, View


def render(view: View) -> str:
    """The graph as a Mermaid ``flowchart LR``; tensor edges dotted and coloured (NIXL red), labelled with their
    type and transport."""
    out = [f"%% {view.caption}", "flowchart LR"]
    for n in view.nodes:
        label = "<br/>".join([f"<b>{_text(n.name)}</b>", *(_text(d) for d in n.details)])
        out.append(f'  {_id(n.name)}["{label}"]:::{n.role}')
    by_color: dict[str, list[int]] = {}
    for i, e in enumerate(view.edges):
        arrow = "-.->" if e.is_tensor else "-->"
        out.append(f'  {_id(e.src)} {arrow}|"{_text(e.label)}"| {_id(e.dst)}')
        if e.is_tensor:
            by_color.setdefault(e.color, []).append(i)
    for role in sorted({n.role for n in view.nodes}):
        _, fill, border = ROLE_STYLE[role]
        out.append(f"  classDef {role} fill:{fill},stroke:{border},color:#202124")
    for color, edges in sorted(by_color.items(), key=lambda item: item[1][0]):
        out.append(f"  linkStyle {','.join(map(str, edges))} stroke:{color},stroke-width:2px")
    return "\n".join(out) + "\n"


def _id(name: str) -> str:
    # Prefixed: Mermaid keywords such as "end" break a chart when used as ids.
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _text(text: str) -> str:
    """Escape for a quoted Mermaid label (its own entity syntax, '#' first)."""
    for raw, entity in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, entity)
    return text
