"""The DAG picture's layout (pure)."""

from __future__ import annotations

from taskd.ui.graph_svg import NODE_W, layers, layout


def test_layers_follow_the_longest_path() -> None:
    edges = [("a", "b"), ("b", "c"), ("a", "c"), ("a", "d")]
    assert layers(["a", "b", "c", "d"], edges) == {"a": 0, "b": 1, "c": 2, "d": 1}


def test_children_sit_right_of_their_parents_and_no_two_boxes_overlap() -> None:
    keys = [f"n{i}" for i in range(40)]
    edges = [(keys[i // 3], keys[i]) for i in range(1, 40)]
    nodes = [(k, f"id-{k}", "PENDING", "t") for k in keys]
    picture = layout(nodes, edges)
    at = {b.key: b for b in picture.boxes}
    for p, c in edges:
        assert at[c].x >= at[p].x + NODE_W
    spots = {(b.x, b.y) for b in picture.boxes}
    assert len(spots) == len(keys)
    assert all(b.x + NODE_W <= picture.width and b.y < picture.height for b in picture.boxes)
    assert len(picture.curves) == len(edges)
    failed = layout([("a", "1", "FAILED", "t"), ("b", "2", "UPSTREAM_FAILED", "t")], [("a", "b")])
    assert failed.curves[0].status == "FAILED"
