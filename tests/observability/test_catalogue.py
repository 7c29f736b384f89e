"""taskd/metrics.py is the one catalogue (STYLE item 6), and the README documents all of it."""

from __future__ import annotations

import ast
import subprocess

from prometheus_client import generate_latest

import taskd.metrics
from tests.observability.catalogue import ROOT, declared_metrics, readme_metrics
from tests.observability.prom import tool

CONSTRUCTORS = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


def test_readme_documents_exactly_the_catalogue() -> None:
    documented = readme_metrics()
    declared = declared_metrics()
    assert set(documented) == set(declared)
    for name, (kind, labels, help_text) in declared.items():
        doc = documented[name]
        assert (doc.type, doc.labels) == (kind, labels), name
        assert help_text.endswith("."), name


def test_features_not_built_yet_say_so() -> None:
    later = {n for n, d in readme_metrics().items() if not d.emitted_now}
    assert later == {
        "taskd_tasks_cancelled_total",
        "taskd_tasks_dead_lettered_total",
        "taskd_notifications_total",
        "taskd_notify_outbox_backlog",
    }


def test_task_labels_are_bounded() -> None:
    for name, (_, labels, _) in declared_metrics().items():
        assert not {"id", "task_id", "tenant", "worker", "error"} & set(labels), name


def test_nothing_else_constructs_a_metric() -> None:
    for path in (ROOT / "taskd").rglob("*.py"):
        if path == ROOT / "taskd" / "metrics.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "prometheus_client"
            ):
                assert not CONSTRUCTORS & {a.name for a in node.names}, path


def test_the_exposition_passes_promtool_lint() -> None:
    series = taskd.metrics.task_series("lint-queue", "lint.type")
    series.run_seconds.observe(0.01)
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=generate_latest(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
