"""One self-contained HTML page: the picture as inline SVG, a legend and tables.

No script, no stylesheet or font from the network: the file opens offline and
can be attached to an issue or a review as is.
"""

from __future__ import annotations

from html import escape

from .layout import LINE_H, PAD, Box, Layout, label_width, layout
from .view import HTTP_COLOR, ROLE_STYLE, TENSOR_TRANSPORTS, View, VizEdge

_CSS = """
body { font: 14px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #202124; margin: 24px; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #5f6368; margin: 0 0 16px; }
figure { margin: 0 0 16px; overflow-x: auto; }
svg text { font: 12px Helvetica, Arial, sans-serif; fill: #202124; }
svg text.name { font-weight: bold; }
svg text.edge { font-size: 11px; }
.legend { display: flex; flex-wrap: wrap; gap: 8px 20px; margin: 0 0 20px; color: #3c4043; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.swatch { width: 14px; height: 14px; border-radius: 3px; border: 2px solid; display: inline-block; }
table { border-collapse: collapse; margin: 0 0 20px; }
th, td { border: 1px solid #dadce0; padding: 4px 10px; text-align: left; }
th { background: #f1f3f4; }
td.num { text-align: right; }
tr.nixl td { color: #d93025; }
tr.files td, tr.engine td { color: #b06000; }
""".strip()


def render(view: View) -> str:
    """The whole page as one string."""
    n_nodes, n_edges = len(view.nodes), len(view.edges)
    meta = " · ".join(p for p in (
        escape(view.description), f"shape {escape(view.shape)}", f"{n_nodes} nodes", f"{n_edges} edges",
        f"{view.gpus_total} GPUs",
    ) if p)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(view.name)} · servegraph</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(view.name)}</h1>",
        f'<p class="meta">{meta}</p>',
        f"<figure>\n{_svg(view, layout(view))}\n</figure>",
        _legend(view),
        _node_table(view),
        _edge_table(view),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _svg(view: View, lay: Layout) -> str:
    out = [
        f'<svg width="{lay.width}" height="{lay.height}" viewBox="0 0 {lay.width} {lay.height}" role="img" '
        f'aria-label="{escape(view.caption)}">',
        "<defs>",
        *(f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" '
          f'markerWidth="10" markerHeight="10" orient="auto-start-reverse">'
          f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
          for kind, color in _arrow_colors(view)),
        "</defs>",
    ]
    boxes = lay.boxes
    out += [_edge(e, boxes[e.src], boxes[e.dst]) for e in view.edges if e.src in boxes and e.dst in boxes]
    out += [_box(b) for b in lay.boxes.values()]
    out.append("</svg>")
    return "\n".join(out)


def _arrow_colors(view: View) -> list[tuple[str, str]]:
    """(edge kind, colour) of every arrowhead the picture needs."""
    return [("http", HTTP_COLOR)] + [(kind, color) for kind, (_, _, color) in _tensor_kinds(view)]


def _tensor_kinds(view: View) -> list[tuple[str, tuple[str, str, str]]]:
    """The TENSOR_TRANSPORTS items the picture shows: NIXL always, the others when an edge uses them."""
    used = {e.transport for e in view.edges}
    return [(kind, t) for kind, t in TENSOR_TRANSPORTS.items() if kind == "nixl" or kind in used]


def _box(b: Box) -> str:
    n = b.node
    lines = [
        f'<g class="node" id="node-{escape(n.name)}">',
        f'<rect x="{b.x}" y="{b.y}" width="{b.w}" height="{b.h}" rx="8" fill="{n.fill}" stroke="{n.border}" stroke-width="2"/>',
    ]
    for i, text in enumerate(n.lines):
        cls = ' class="name"' if i == 0 else ""
        y = b.y + PAD + LINE_H * i + 12
        lines.append(f'<text x="{b.x + b.w // 2}" y="{y}" text-anchor="middle"{cls}>{escape(text)}</text>')
    lines.append("</g>")
    return "\n".join(lines)


def _edge(e: VizEdge, a: Box, b: Box) -> str:
    kind = e.transport if e.is_tensor else "http"
    x1, y1 = a.x + a.w, a.y + a.h // 2
    x2, y2 = b.x, b.y + b.h // 2
    if x2 <= x1:  # same or earlier column (only on invalid graphs): loop around below
        x2, y2 = b.x + b.w // 2, b.y + b.h
    mid = (x1 + x2) // 2
    dash = ' stroke-dasharray="7 4"' if e.is_tensor else ""
    width = 2.5 if e.is_tensor else 1.5
    label_w = label_width(e.label)
    lx, ly = (x1 + x2) // 2, (y1 + y2) // 2
    return "\n".join([
        f'<g class="edge {kind}">',
        f'<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" fill="none" stroke="{e.color}" '
        f'stroke-width="{width}"{dash} marker-end="url(#arrow-{kind})"/>',
        f'<rect x="{lx - label_w // 2}" y="{ly - 9}" width="{label_w}" height="16" rx="3" fill="#ffffff" opacity="0.9"/>',
        f'<text x="{lx}" y="{ly + 3}" text-anchor="middle" class="edge" fill="{e.color}">{escape(e.label)}</text>',
        "</g>",
    ])


def _legend(view: View) -> str:
    items = [
        f'<span><svg width="36" height="10"><line x1="0" y1="5" x2="36" y2="5" stroke="{HTTP_COLOR}" '
        f'stroke-width="1.5"/></svg>HTTP (requests)</span>',
    ]
    for _, (_, text, color) in _tensor_kinds(view):
        items.append(f'<span><svg width="36" height="10"><line x1="0" y1="5" x2="36" y2="5" stroke="{color}" '
                     f'stroke-width="2.5" stroke-dasharray="7 4"/></svg>{escape(text)}</span>')
    for role in ROLE_STYLE:
        if any(n.role == role for n in view.nodes):
            title, fill, border = ROLE_STYLE[role]
            items.append(f'<span><i class="swatch" style="background:{fill};border-color:{border}"></i>{title}</span>')
    return '<div class="legend">\n' + "\n".join(items) + "\n</div>"


def _node_table(view: View) -> str:
    head = "<tr><th>node</th><th>role</th><th>engine</th><th>model</th><th>replicas</th><th>GPUs/replica</th><th>GPUs</th></tr>"
    rows = [
        f"<tr><td>{escape(n.name)}</td><td>{n.title}</td><td>{escape(n.engine or '')}</td>"
        f"<td>{escape(n.model or '')}</td><td class=\"num\">{n.replicas}</td>"
        f"<td class=\"num\">{n.gpus_per_replica}</td><td class=\"num\">{n.gpus_total}</td></tr>"
        for n in view.nodes
    ]
    return "<table class=\"nodes\">\n" + "\n".join([head, *rows]) + "\n</table>"


def _edge_table(view: View) -> str:
    head = "<tr><th>from</th><th>to</th><th>type</th><th>transport</th></tr>"
    rows = [
        f'<tr class="{e.transport if e.is_tensor else "http"}"><td>{escape(e.src)}</td><td>{escape(e.dst)}</td>'
        f"<td>{escape(e.type)}</td><td>{escape(TENSOR_TRANSPORTS[e.transport][0] if e.is_tensor else 'HTTP')}</td></tr>"
        for e in view.edges
    ]
    return "<table class=\"edges\">\n" + "\n".join([head, *rows]) + "\n</table>"
