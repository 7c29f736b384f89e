"""Every PromQL expression of the dashboard and the alert rules, run against a real Prometheus
that scraped a real ``taskd --role all`` during a short load (Debian's prometheus binary)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from taskd.api.auth import mint_token
from tests.fault.harness import RedisServer, Taskd, free_port, processes, role_env
from tests.helpers import eventually
from tests.observability.catalogue import not_yet_emitted
from tests.observability.prom import Prometheus
from tests.observability.test_deploy_files import (
    PROMETHEUS,
    alert_rules,
    dashboard_targets,
    metric_names,
)

SECRET = "fault-secret-" + "y" * 32  # role_env's
# Grafana's variables, as Grafana would fill them in: all queues, a rate window.
VARIABLES = {"$__rate_interval": "1m", "$queue": ".*"}
LOAD = [  # (type, payload, extra fields, how many)
    ("demo.echo", {"n": 1}, {}, 60),
    ("demo.flaky", {"fail_times": 1}, {}, 10),  # retried once, then succeed
    ("demo.fail", None, {"max_retries": 1}, 6),  # retried once, then FAILED
    ("demo.sleep", {"seconds": 1.0}, {}, 6),  # in flight for a while
    ("demo.echo", {"n": 2}, {"delay": 1.0}, 5),  # delayed, then run
    ("demo.echo", {"n": 3}, {"delay": 600}, 3),  # still delayed at the end
]
_THRESHOLD = re.compile(r"(>=|<=|==|!=|>|<)\s*(-?[0-9.]+)")
SUCCEEDED = 60 + 10 + 6 + 5
FAILED = 6
STILL_DELAYED = 3
# The DLQ sink (Kafka) is down in this run, on purpose: the dead letters of the failed tasks wait
# in the outbox and publishing keeps failing, so this alert must be pending (its `for` is 10m),
# and every other one inactive.
ACTIVE = {"TaskdDLQPublishFailing": "pending"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def substitute(expr: str) -> str:
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


async def put_load(api: str, queue: str) -> list[str]:
    headers = {"Authorization": f"Bearer {mint_token(SECRET, 'observability')}"}
    bodies = [
        {"type": kind, "queue": queue, **({"payload": p} if p is not None else {}), **extra}
        for kind, p, extra, n in LOAD
        for _ in range(n)
    ]
    async with aiohttp.ClientSession(api, headers=headers) as http:

        async def post(body: dict[str, Any]) -> str:
            async with http.post("/v1/tasks", json=body) as resp:
                assert resp.status == 201, await resp.text()
                return str((await resp.json())["id"])

        ids = list(await asyncio.gather(*(post(b) for b in bodies)))
        async with http.get("/readyz") as resp:  # sets taskd_dependency_up
            assert resp.status == 200
        async with http.get("/v1/tasks/not-a-uuid") as resp:  # a 4xx for the HTTP metrics
            assert 400 <= resp.status < 500
    return ids


async def wait_for_outcomes(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:

        async def done() -> bool:
            rows = await conn.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status")
            by = {r["status"]: r["n"] for r in rows}
            return by == {"SUCCESS": SUCCEEDED, "FAILED": FAILED, "PENDING": STILL_DELAYED}

        await eventually(done, timeout=30, interval=0.1)
    finally:
        await conn.close()


async def wait_for_scrapes(prom: Prometheus, queue: str) -> None:
    """Prometheus has the final counts and gauges, and has evaluated every rule."""

    def one(expr: str) -> float:
        result = prom.query(expr)
        return float(result[0]["value"][1]) if result else -1.0

    async def caught_up() -> bool:
        rules = prom.api("rules")["groups"][0]["rules"]
        return (
            one("sum(taskd_tasks_succeeded_total)") == SUCCEEDED
            and one("sum(taskd_tasks_failed_total)") == FAILED
            and one(f'max(taskd_queue_depth{{queue="{queue}",state="delayed"}})') == STILL_DELAYED
            and one(f'max(taskd_queue_depth{{queue="{queue}",state="ready"}})') == 0
            and one("min(count_over_time(up[1m]))") >= 5
            and one("max(taskd_dlq_unpublished)") == FAILED
            and one("sum(increase(taskd_dlq_publish_failures_total[1m]))") > 0
            and all(not r["lastEvaluation"].startswith("0001") for r in rules)
        )

    await eventually(caught_up, timeout=30, interval=0.25)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def check_returns_data(prom: Prometheus, expr: str, exposition: str, where: str) -> bool:
    """Runs ``expr`` (failing if it does not parse); True when it returned samples.

    An empty result is allowed only for metrics of features that have not landed (the DLQ,
    the notifier, config reload, cancellation: their README row says "emitted once..."), whose
    events cannot happen yet: then each such metric must at least be in taskd's exposition.
    Every other metric the expression reads must have series in Prometheus.
    """
    result = prom.query(expr)
    names = metric_names(expr)
    quiet = names & not_yet_emitted()
    for name in names - quiet:
        series = prom.query(f'count({{__name__=~"{name}(_bucket)?"}})')
        assert series, f"{where}: {name} has no series in Prometheus"
    for name in quiet:
        assert f"# HELP {name} " in exposition, f"{where}: {name} is not exposed"
    if not result:
        assert quiet, f"{where}: no data for {expr}"
    return bool(result)


async def test_every_query_parses_and_returns_data(
    database: str, redis_server: RedisServer, queue_name: str, tmp_path: Path
) -> None:
    env = role_env(
        database,
        redis_server.url,
        queue_name,
        tmp_path / "executions.log",
        WORKER__HANDLERS="[examples.handlers]",
        WORKER__CONCURRENCY="20",
        LOG__LEVEL="DEBUG",
        DLQ__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",  # nothing listens there
        DLQ__PUBLISH_TIMEOUT_SECONDS="1",
        DLQ__INTERVAL_SECONDS="0.2",
        DLQ__RETRY_BASE_SECONDS="0.2",
        DLQ__RETRY_MAX_SECONDS="1",
    )
    with processes() as procs:
        taskd = Taskd(["all"], env, "all")
        taskd.env.update({"TASKD_API__PORT": str(taskd.port), "TASKD_LOG__JSON": "true"})
        procs.append(taskd.start())
        prom = Prometheus([f"127.0.0.1:{taskd.port}"], [PROMETHEUS / "rules.yml"]).start()
        try:
            ids = await put_load(f"http://127.0.0.1:{taskd.port}", queue_name)
            await wait_for_outcomes(database)
            await wait_for_scrapes(prom, queue_name)
            exposition = scrape(taskd.port)
            check_dashboard(prom, exposition, queue_name)
            check_rules(prom, exposition)
        finally:
            prom.stop()
    check_logs(taskd.log_path, ids)


def check_dashboard(prom: Prometheus, exposition: str, queue: str) -> None:
    with_data = 0
    for title, expr in dashboard_targets():
        with_data += check_returns_data(prom, substitute(expr), exposition, title)
    assert with_data >= 25
    # The queue variable's values (label_values(taskd_queue_depth, queue)).
    assert queue in prom.api("label/queue/values", **{"match[]": "taskd_queue_depth"})
    # A few values the load determines.
    [outcome] = prom.query(substitute('max(taskd_queue_depth{queue=~"$queue",state="delayed"})'))
    assert float(outcome["value"][1]) == STILL_DELAYED
    [slots] = prom.query("sum(taskd_worker_slots)")
    assert float(slots["value"][1]) == 20


def as_bool(expr: str) -> str:
    """The alert condition for every series: ``x > 300`` filters, ``x > bool 300`` gives 0/1."""
    return _THRESHOLD.sub(r"\1 bool \2", expr)


def check_rules(prom: Prometheus, exposition: str) -> None:
    """An alert expression is empty while its condition does not hold, so each is run twice:
    as written (it must parse; only the ACTIVE alerts return samples), and with its comparisons
    made ``bool``, which must return data (unless it reads only metrics of features not built
    yet): 1 for the ACTIVE alerts, else 0. Prometheus itself evaluated every rule without
    error, and exactly the ACTIVE ones are pending."""
    for rule in alert_rules():
        name, expr = rule["alert"], rule["expr"]
        active = name in ACTIVE
        assert bool(prom.query(expr)) == active, name
        condition = as_bool(expr)
        assert condition != expr, name
        if check_returns_data(prom, condition, exposition, name):
            assert {r["value"][1] for r in prom.query(condition)} == {"1" if active else "0"}, name
    [group] = prom.api("rules")["groups"]
    evaluated = {r["name"]: r for r in group["rules"]}
    assert set(evaluated) == {r["alert"] for r in alert_rules()}
    for name, r in evaluated.items():
        assert (r["health"], r.get("lastError", "")) == ("ok", ""), name
        assert r["state"] == ACTIVE.get(name, "inactive"), (name, r["alerts"])


def check_logs(path: Path, ids: list[str]) -> None:
    """Every line is JSON; every worker line about a task has its task and trace id."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    worker = [x for x in lines if x["logger"] == "taskd.worker" and "task_id" in x]
    assert {x["task_id"] for x in worker} >= set(ids) - set(ids[-STILL_DELAYED:])
    for x in worker:
        assert x["trace_id"] == x["task_id"] and x["attempt"] >= 1, x
    submitted = [x for x in lines if x["msg"] == "task submitted"]
    assert {x["task_id"] for x in submitted} == set(ids)
    assert all(x["request_id"] and x["trace_id"] for x in submitted)
