"""Lay a DAG out for a server-drawn SVG: pure code, no I/O.

Layers by longest path from the roots (left to right), nodes within a layer ordered by the mean
position of their parents (one barycentre pass), edges as cubic curves. Past ``MAX_NODES`` the
page shows a table instead: a picture of thousands of boxes helps nobody.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from graphlib import TopologicalSorter

MAX_NODES = 300
NODE_W, NODE_H = 150, 40
GAP_X, GAP_Y = 60, 16
PAD = 10


@dataclass(frozen=True, slots=True)
class Box:
    key: str
    id: str
    status: str
    type: str
    x: int
    y: int

    @property
    def label(self) -> str:
        return self.key if len(self.key) <= 18 else self.key[:17] + "…"


@dataclass(frozen=True, slots=True)
class Curve:
    parent: str
    child: str
    path: str
    status: str  # the parent's status: an edge out of a failed task is drawn as failed


@dataclass(frozen=True, slots=True)
class Layout:
    boxes: list[Box]
    curves: list[Curve]
    width: int
    height: int


def layers(keys: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Each node's layer: the length of the longest path from a root to it."""
    parents: dict[str, set[str]] = {k: set() for k in keys}
    for p, c in edges:
        if p in parents and c in parents:
            parents[c].add(p)
    depth: dict[str, int] = {}
    for key in TopologicalSorter(parents).static_order():
        depth[key] = max((depth[p] + 1 for p in parents[key]), default=0)
    return depth


def layout(nodes: Sequence[tuple[str, str, str, str]], edges: Sequence[tuple[str, str]]) -> Layout:
    """``nodes`` are (key, id, status, type); ``edges`` (parent key, child key)."""
    info = {n[0]: n for n in nodes}
    depth = layers(list(info), edges)
    columns: dict[int, list[str]] = {}
    for key in sorted(info, key=lambda k: (depth[k], k)):
        columns.setdefault(depth[key], []).append(key)
    parents: dict[str, list[str]] = {k: [] for k in info}
    for p, c in edges:
        if p in info and c in info:
            parents[c].append(p)
    row: dict[str, float] = {}
    for d in sorted(columns):
        col = columns[d]
        if d > 0:  # barycentre of the parents' rows, ties by key
            col.sort(key=lambda k: (sum(row[p] for p in parents[k]) / max(len(parents[k]), 1), k))
        for i, key in enumerate(col):
            row[key] = i
    boxes = {
        key: Box(
            key,
            info[key][1],
            info[key][2],
            info[key][3],
            PAD + depth[key] * (NODE_W + GAP_X),
            PAD + int(row[key]) * (NODE_H + GAP_Y),
        )
        for key in info
    }
    curves = [_curve(boxes[p], boxes[c]) for p, c in edges if p in boxes and c in boxes]
    width = PAD * 2 + (max(columns, default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    tallest = max((len(c) for c in columns.values()), default=1)
    height = PAD * 2 + tallest * (NODE_H + GAP_Y) - GAP_Y
    return Layout(sorted(boxes.values(), key=lambda b: b.key), curves, width, height)


def _curve(p: Box, c: Box) -> Curve:
    x1, y1 = p.x + NODE_W, p.y + NODE_H // 2
    x2, y2 = c.x, c.y + NODE_H // 2
    mid = (x1 + x2) // 2
    return Curve(p.key, c.key, f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}", p.status)
