"""deploy/prometheus and deploy/grafana: promtool checks, alert unit tests, dashboard shape.

Their queries run against a real Prometheus in test_real_prometheus.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import yaml

from tests.observability.catalogue import ROOT, declared_metrics
from tests.observability.prom import tool

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "taskd.json"
_NAME = re.compile(r"\btaskd_[a-z_]+")
_HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def promtool(*args: str) -> str:
    result = subprocess.run(
        [tool("promtool"), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard."""
    return [
        (p["title"], t["expr"])
        for p in dashboard()["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    ]


def metric_names(expr: str) -> set[str]:
    """The catalogue names an expression reads (histogram series mapped to their metric)."""
    declared = declared_metrics()
    out = set()
    for name in _NAME.findall(expr):
        base = _HISTOGRAM_SUFFIX.sub("", name)
        out.add(base if base != name and declared.get(base, ("",))[0] == "histogram" else name)
    return out


def test_rules_pass_promtool_check() -> None:
    assert "SUCCESS" in promtool("check", "rules", "rules.yml")


def test_every_alert_has_a_passing_promtool_unit_test() -> None:
    tests = yaml.safe_load((PROMETHEUS / "rules.test.yml").read_text())
    tested = {
        case["alertname"]
        for t in tests["tests"]
        for case in t["alert_rule_test"]
        if case.get("exp_alerts")  # a case that expects the alert to fire
    }
    assert {r["alert"] for r in alert_rules()} == tested
    assert "SUCCESS" in promtool("test", "rules", "rules.test.yml")


def test_the_issue_asks_for_these_alerts() -> None:
    assert {
        "TaskdQueueBackingUp",
        "TaskdOldestTaskTooOld",
        "TaskdDLQGrowing",
        "TaskdNoWorkers",
        "TaskdNotifierFailing",
        "TaskdLeaseReclaimsSpiking",
    } <= {r["alert"] for r in alert_rules()}
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_local_scrape_config_is_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in out


def test_dashboard_is_a_grafana_dashboard() -> None:
    d = dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["queue"]["definition"] == "label_values(taskd_queue_depth, queue)"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        assert all(t["expr"].strip() and "legendFormat" in t for t in p["targets"]), p["title"]


def test_dashboard_has_the_sections_the_issue_asks_for() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard()["panels"])
    for wanted in (
        "outcomes",
        "queue depth",
        "oldest",
        "wait time",
        "run time",
        "retries",
        "dead letters",
        "saturation",
        "notification",
    ):
        assert wanted in titles, wanted


def test_dashboard_shows_every_metric_and_reads_only_catalogued_ones() -> None:
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_targets()))
    assert shown == set(declared_metrics())
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= set(declared_metrics()), rule["alert"]
