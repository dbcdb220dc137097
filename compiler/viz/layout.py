"""A small layered layout, so the HTML page needs no Graphviz and no JavaScript.

Columns are the longest path from the sources (a request's stage); within a
column, nodes follow the mean row of their predecessors, then declaration
order. Integer coordinates only: the output is byte-stable.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .view import View, VizNode

CHAR_W = 7  # px per character at the page's 12px font (a generous average)
LINE_H = 16
PAD = 10
COL_GAP = 90  # at least; widened so the longest edge label fits between columns
ROW_GAP = 24
MARGIN = 20


@dataclass(frozen=True)
class Box:
    """Where one node is drawn."""

    node: VizNode
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Layout:
    """Boxes by node name and the canvas size."""

    boxes: dict[str, Box]
    width: int
    height: int


def layout(view: View) -> Layout:
    """Place every node of ``view`` (cycles tolerated: their nodes go in a last column)."""
    columns = _columns(view)
    sizes = {n.name: _size(n) for n in view.nodes}
    col_w = [max(sizes[n.name][0] for n in col) for col in columns]
    col_h = [sum(sizes[n.name][1] for n in col) + ROW_GAP * (len(col) - 1) for col in columns]
    height = max(col_h, default=0)
    gap = max([COL_GAP, *(label_width(e.label) + 40 for e in view.edges)])
    boxes: dict[str, Box] = {}
    x = MARGIN
    for col, w, h in zip(columns, col_w, col_h):
        y = MARGIN + (height - h) // 2
        for n in col:
            bw, bh = sizes[n.name]
            boxes[n.name] = Box(n, x + (w - bw) // 2, y, bw, bh)
            y += bh + ROW_GAP
        x += w + gap
    width = x - gap + MARGIN if columns else 2 * MARGIN
    return Layout(boxes, width, height + 2 * MARGIN)


def label_width(text: str) -> int:
    """Width of an edge label's background."""
    return CHAR_W * len(text) + 8


def _size(n: VizNode) -> tuple[int, int]:
    return max(140, CHAR_W * max(len(line) for line in n.lines) + 2 * PAD), LINE_H * len(n.lines) + 2 * PAD


def _columns(view: View) -> list[list[VizNode]]:
    order = {n.name: i for i, n in enumerate(view.nodes)}
    preds: dict[str, list[str]] = {n.name: [] for n in view.nodes}
    succs: dict[str, list[str]] = {n.name: [] for n in view.nodes}
    for e in view.edges:
        if e.src in order and e.dst in order:
            succs[e.src].append(e.dst)
            preds[e.dst].append(e.src)
    # Kahn's algorithm; a node's column is one past its deepest predecessor.
    indegree = {name: len(p) for name, p in preds.items()}
    depth = {name: 0 for name in order}
    ready = deque(sorted((n for n, d in indegree.items() if d == 0), key=order.__getitem__))
    placed: list[str] = []
    while ready:
        name = ready.popleft()
        placed.append(name)
        for nxt in succs[name]:
            depth[nxt] = max(depth[nxt], depth[name] + 1)
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    last = max(depth.values(), default=0) + 1
    for name in order:
        if indegree[name] > 0:  # on a cycle (an invalid graph): park it
            depth[name] = last
    columns: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    row: dict[str, float] = {}
    for col_index in range(len(columns)):
        members = [n for n in order if depth[n] == col_index]

        def key(name: str) -> tuple[float, int]:
            rows = [row[p] for p in preds[name] if p in row]
            return (sum(rows) / len(rows) if rows else -1.0, order[name])

        members.sort(key=key)
        for i, name in enumerate(members):
            row[name] = float(i)
        columns[col_index] = members
    by_name = {n.name: n for n in view.nodes}
    return [[by_name[name] for name in col] for col in columns if col]
