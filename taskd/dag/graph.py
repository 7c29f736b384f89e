"""A task graph as pure data: ``key -> the keys it depends on``.

The store applies what this module decides; nothing here touches a database or the event loop,
so hypothesis can explore it freely (tests/unit/test_dag.py).
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from taskd.errors import TaskdError


@dataclass(frozen=True)
class Problem:
    key: str
    kind: str  # duplicate | unknown_dependency | self_dependency | cycle
    detail: str
    index: int  # position of the offending node in the input


class DagError(TaskdError):
    """The graph is not a valid DAG."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.detail for p in problems))
        self.problems = problems


class Graph:
    """An immutable, validated DAG over string keys."""

    def __init__(self, parents: Mapping[str, frozenset[str]]) -> None:
        self.parents = dict(parents)
        children: dict[str, set[str]] = {k: set() for k in self.parents}
        for child, ps in self.parents.items():
            for p in ps:
                children[p].add(child)
        self.children = {k: frozenset(v) for k, v in children.items()}

    @classmethod
    def build(
        cls, nodes: Iterable[tuple[str, Iterable[str]]], external: Iterable[str] = ()
    ) -> tuple[Graph, dict[str, frozenset[str]]]:
        """Validate ``(key, depends_on)`` pairs; returns the graph over the keys and, per key,
        its dependencies outside the graph (ids of existing tasks, from ``external``).

        Raises DagError listing every problem found; a cycle is named by the keys along it.
        """
        outside = set(external)
        problems: list[Problem] = []
        inner: dict[str, frozenset[str]] = {}
        ext: dict[str, frozenset[str]] = {}
        pairs = [(k, list(deps)) for k, deps in nodes]
        keys = [k for k, _ in pairs]
        seen: set[str] = set()
        for i, key in enumerate(keys):
            if key in seen:
                problems.append(Problem(key, "duplicate", f"key {key!r} appears more than once", i))
            seen.add(key)
        for i, (key, deps) in enumerate(pairs):
            if key in deps:
                problems.append(Problem(key, "self_dependency", f"{key!r} depends on itself", i))
            unknown = [d for d in deps if d not in seen and d not in outside]
            problems += [
                Problem(key, "unknown_dependency", f"{key!r} depends on unknown {d!r}", i)
                for d in unknown
            ]
            inner[key] = frozenset(d for d in deps if d in seen and d != key)
            ext[key] = frozenset(d for d in deps if d not in seen and d in outside)
        if not problems:
            cycle = find_cycle(inner)
            if cycle:
                path = " -> ".join(cycle)
                problems.append(Problem(cycle[0], "cycle", f"cycle: {path}", keys.index(cycle[0])))
        if problems:
            raise DagError(problems)
        return cls(inner), ext

    def order(self) -> list[str]:
        """A topological order: every key after all of its parents."""
        return list(graphlib.TopologicalSorter(self.parents).static_order())

    def roots(self) -> set[str]:
        return {k for k, ps in self.parents.items() if not ps}

    def ready(self, succeeded: set[str]) -> set[str]:
        """Keys not yet succeeded whose parents all succeeded."""
        return {k for k, ps in self.parents.items() if k not in succeeded and ps <= succeeded}

    def descendants(self, failed: Iterable[str]) -> set[str]:
        """Every key reachable from ``failed`` (the failure cascade), excluding ``failed``."""
        out: set[str] = set()
        stack = [c for f in failed for c in self.children.get(f, ())]
        while stack:
            key = stack.pop()
            if key not in out:
                out.add(key)
                stack.extend(self.children[key])
        return out


def find_cycle(parents: Mapping[str, Iterable[str]]) -> list[str] | None:
    """The keys of one cycle, first key repeated at the end, or None for an acyclic graph."""
    try:
        graphlib.TopologicalSorter(parents).prepare()
    except graphlib.CycleError as e:
        # graphlib names the cycle parent -> child, the first key repeated at the end.
        return list(e.args[1])
    return None
