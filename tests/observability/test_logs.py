"""Structured logs: task lines carry the task and trace ids, API lines the request ids."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp.test_utils import TestClient

from taskd import TaskContext, logs
from taskd.api.tracing import request_ids
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore
from tests.conftest import bearer
from tests.helpers import new_task, registry_of, running_worker, submit, wait_terminal

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@contextlib.contextmanager
def json_lines(level: int = logging.DEBUG, *loggers: str) -> Iterator[list[dict[str, Any]]]:
    """Capture records as the JSON formatter writes them (with the context filter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    old = {name: logging.getLogger(name).level for name in loggers}
    root.addHandler(handler)
    for name in loggers:
        logging.getLogger(name).setLevel(level)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        for name, lvl in old.items():
            logging.getLogger(name).setLevel(lvl)
        lines += [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_every_task_line_names_the_task(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    handler_log = logging.getLogger("tests.observability.handler")

    async def chatty(ctx: TaskContext, payload: Any) -> str:
        handler_log.info("working on it")
        await asyncio.sleep(0)  # still the task's context after a suspension
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return "ok"

    with json_lines(logging.DEBUG, "taskd", "tests.observability.handler") as lines:
        [tid] = await submit(store, queue, new_task(queue_name, "t.chatty"))
        async with running_worker(settings, store, queue, registry_of(t__chatty=chatty)):
            await wait_terminal(store, tid)
    mine = [line for line in lines if line.get("task_id") == tid]
    by_msg = {(line["msg"], line["attempt"]) for line in mine}
    assert {("working on it", 1), ("working on it", 2), ("attempt started", 1)} <= by_msg
    assert ("attempt succeeded", 2) in by_msg
    retry = [line for line in mine if line["msg"].startswith("attempt 1 ended ERROR")]
    assert len(retry) == 1 and retry[0]["level"] == "info", mine
    assert retry[0]["error_type"] == "RuntimeError"
    for line in mine:
        assert line["trace_id"] == tid
        assert (line["queue"], line["type"]) == (queue_name, "t.chatty")
    # Lines about the worker as a whole carry no task fields.
    serving = [line for line in lines if line["msg"].startswith("worker ")]
    assert serving and all("task_id" not in line for line in serving)


async def test_api_lines_carry_request_and_trace_ids(
    api: TestClient[Any, Any], queue_name: str
) -> None:
    body = {"type": "t.ok", "queue": queue_name}
    with json_lines(logging.DEBUG, "taskd.api") as lines:
        resp = await api.post(
            "/v1/tasks",
            json=body,
            headers={**bearer(), "X-Request-Id": "req-123", "traceparent": TRACEPARENT},
        )
        assert resp.status == 201
        assert resp.headers["X-Request-Id"] == "req-123"
        tid = (await resp.json())["id"]
        plain = await api.post("/v1/tasks", json=body, headers=bearer())
        generated = plain.headers["X-Request-Id"]
        plain_id = (await plain.json())["id"]
        bad = await api.get("/v1/tasks/nope", headers={**bearer(), "X-Request-Id": "a b"})
        assert bad.status >= 400
        assert bad.headers["X-Request-Id"] != "a b"
    [traced] = [line for line in lines if line.get("task_id") == tid]
    assert traced["msg"] == "task submitted"
    assert traced["request_id"] == "req-123"
    assert traced["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    [untraced] = [line for line in lines if line.get("task_id") == plain_id]
    assert untraced["request_id"] == untraced["trace_id"] == generated
    assert len(generated) == 32


def test_request_ids_from_headers() -> None:
    assert request_ids({"X-Request-Id": "abc-1"}) == ("abc-1", "abc-1")
    rid, trace = request_ids({"traceparent": TRACEPARENT})
    assert trace == "4bf92f3577b34da6a3ce929d0e0e4736" and rid != trace
    zero = "00-" + "0" * 32 + "-00f067aa0ba902b7-01"
    for bad in ("garbage", zero, TRACEPARENT.upper()):
        rid, trace = request_ids({"X-Request-Id": "r", "traceparent": bad})
        assert (rid, trace) == ("r", "r")
    rid, _ = request_ids({"X-Request-Id": "x" * 129})
    assert rid != "x" * 129


async def test_context_fields_stay_in_their_task() -> None:
    seen: dict[str, Any] = {}
    log = logging.getLogger("tests.observability.ctx")

    async def one(name: str) -> None:
        logs.bind(task_id=name)
        await asyncio.sleep(0)
        log.warning("from %s", name)

    with json_lines(logging.DEBUG, "tests.observability.ctx") as lines:
        await asyncio.gather(one("a"), one("b"))
        log.warning("outside")
        with logs.bound(request_id="r1"):
            log.warning("explicit wins", extra={"request_id": "r2"})
    for line in lines:
        seen[line["msg"]] = line
    assert seen["from a"]["task_id"] == "a" and seen["from b"]["task_id"] == "b"
    assert "task_id" not in seen["outside"]
    assert seen["explicit wins"]["request_id"] == "r2"


def test_text_format_appends_fields() -> None:
    record = logging.LogRecord("taskd.worker", logging.INFO, __file__, 1, "hello", None, None)
    with logs.bound(task_id="t1", trace_id="t1"):
        logs.ContextFilter().filter(record)
    line = logs.TextFormatter().format(record)
    assert line.endswith("taskd.worker: hello task_id=t1 trace_id=t1"), line
