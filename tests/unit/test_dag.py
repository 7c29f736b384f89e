"""Property tests of the pure DAG logic."""

from __future__ import annotations

import graphlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskd.dag import DagError, Graph


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 25) -> list[tuple[str, list[str]]]:
    """Random DAGs: node i may only depend on nodes before it, so no cycle is possible."""
    n = draw(st.integers(1, max_nodes))
    keys = [f"k{i}" for i in range(n)]
    nodes = []
    for i, key in enumerate(keys):
        deps = draw(st.lists(st.sampled_from(keys[:i]), unique=True)) if i else []
        nodes.append((key, deps))
    return draw(st.permutations(nodes))


@given(dags())
def test_every_accepted_graph_is_acyclic_and_ordered(nodes: list[tuple[str, list[str]]]) -> None:
    graph, external = Graph.build(nodes)
    order = graph.order()
    assert sorted(order) == sorted(k for k, _ in nodes)
    position = {k: i for i, k in enumerate(order)}
    for key, deps in nodes:
        assert all(position[d] < position[key] for d in deps)
    assert all(not e for e in external.values())


@given(dags(), st.data())
def test_every_generated_cycle_is_rejected(
    nodes: list[tuple[str, list[str]]], data: st.DataObject
) -> None:
    by_key = dict(nodes)
    keys = sorted(by_key)
    length = data.draw(st.integers(2, max(2, min(len(keys), 6)))) if len(keys) >= 2 else 0
    if length < 2:
        cycle = [keys[0]]
        by_key[keys[0]] = [*by_key[keys[0]], keys[0]]
        kind = "self_dependency"
    else:
        cycle = data.draw(st.permutations(keys))[:length]
        for parent, child in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            if parent not in by_key[child]:
                by_key[child] = [*by_key[child], parent]
        kind = "cycle"
    with pytest.raises(DagError) as caught:
        Graph.build(by_key.items())
    problems = [p for p in caught.value.problems if p.kind == kind]
    assert problems
    if kind == "cycle":
        named = problems[0].detail.removeprefix("cycle: ").split(" -> ")
        assert named[0] == named[-1]
        for parent, child in itertools.pairwise(named):
            assert parent in by_key[child], "the named cycle follows real edges"


@given(dags(), st.data())
def test_release_never_runs_a_child_before_its_parents(
    nodes: list[tuple[str, list[str]]], data: st.DataObject
) -> None:
    graph, _ = Graph.build(nodes)
    succeeded: set[str] = set()
    while len(succeeded) < len(graph.parents):
        ready = graph.ready(succeeded)
        assert ready, "a valid DAG always has something ready until it is done"
        for key in ready:
            assert graph.parents[key] <= succeeded
        succeeded.add(data.draw(st.sampled_from(sorted(ready))))


@given(dags(), st.data())
def test_cascade_marks_exactly_the_descendants(
    nodes: list[tuple[str, list[str]]], data: st.DataObject
) -> None:
    graph, _ = Graph.build(nodes)
    failed = data.draw(st.sampled_from(sorted(graph.parents)))
    marked = graph.descendants([failed])
    for key in graph.parents:
        reachable = _reaches(graph, failed, key)
        assert (key in marked) == (reachable and key != failed)


def _reaches(graph: Graph, src: str, dst: str) -> bool:
    stack, seen = [src], set()
    while stack:
        k = stack.pop()
        if k == dst:
            return True
        if k not in seen:
            seen.add(k)
            stack.extend(graph.children[k])
    return False


def test_problems_are_all_named() -> None:
    with pytest.raises(DagError) as caught:
        Graph.build([("A", ["A"]), ("B", ["Z"]), ("B", [])])
    kinds = sorted(p.kind for p in caught.value.problems)
    assert kinds == ["duplicate", "self_dependency", "unknown_dependency"]


def test_external_dependencies_are_split_out() -> None:
    graph, external = Graph.build(
        [("A", ["ext-1"]), ("B", ["A", "ext-2"])], external={"ext-1", "ext-2"}
    )
    assert graph.parents == {"A": frozenset(), "B": frozenset({"A"})}
    assert external == {"A": frozenset({"ext-1"}), "B": frozenset({"ext-2"})}
    assert graph.roots() == {"A"}


def test_cycle_message_reads_parent_to_child() -> None:
    with pytest.raises(DagError) as caught:
        Graph.build([("A", ["C"]), ("B", ["A"]), ("C", ["B"])])
    assert caught.value.problems[0].kind == "cycle"
    path = caught.value.problems[0].detail.removeprefix("cycle: ").split(" -> ")
    assert len(path) == 4 and set(path) == {"A", "B", "C"}
    assert graphlib  # stdlib graphlib is what the module relies on
