"""The /v1 task routes of API.md."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import re
import uuid
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from taskd.api.context import ctx, require
from taskd.api.decode import decode, read_json
from taskd.api.errors import ApiError, problem, validation_error
from taskd.api.graphs import GraphService
from taskd.api.representation import task_view
from taskd.api.schemas import (
    EARLIEST_TIME,
    LATEST_TIME,
    STATUSES,
    BatchResult,
    BatchSubmission,
    TaskList,
    TaskSubmission,
)
from taskd.store.tasks import ListFilter
from taskd.types import TERMINAL, TaskStatus

routes = web.RouteTableDef()
_encoder = msgspec.json.Encoder()
# The submission patterns of API.md: a filter that cannot match any task is a client error.
_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_QUEUE = re.compile(r"[a-z0-9_-]{1,64}")


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(obj), status=status, content_type="application/json", headers=headers
    )


def _view(request: web.Request, row: Any, history: list[Any] | None = None) -> Any:
    r = ctx(request).settings.retry
    return task_view(
        row, default_max_retries=r.max_retries, default_timeout=r.timeout, history=history
    )


def _header_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    # isprintable() also refuses the surrogates aiohttp decodes non-UTF-8 header bytes into.
    if key is not None and not (1 <= len(key) <= 255 and key.isprintable()):
        raise validation_error(
            [problem("Idempotency-Key", "must be 1 to 255 printable characters")]
        )
    return key


@routes.post("/v1/tasks")
async def submit_task(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    sub = decode(await read_json(request), TaskSubmission)
    service = ctx(request).submit
    new = service.prepare(sub, principal.tenant, _header_key(request))
    if sub.depends_on:
        graphs = GraphService(service)
        done = await graphs.submit_task(principal.tenant, new, list(sub.depends_on))
    else:
        done = await service.submit_one(new)
    if done.replayed:
        return json_response(_view(request, done.row), 200, {"Idempotent-Replayed": "true"})
    return json_response(_view(request, done.row), 201)


@routes.post("/v1/tasks/batch")
async def submit_batch(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    batch = decode(await read_json(request), BatchSubmission)
    service = ctx(request).submit
    news, details, keys = [], [], set()
    for i, raw in enumerate(batch.tasks):
        try:
            sub = decode(raw, TaskSubmission, prefix=f"tasks[{i}]")
            news.append(
                service.prepare(sub, principal.tenant, None, f"tasks[{i}].", dependencies=False)
            )
        except ApiError as e:
            if e.status != 422:  # e.g. invalid UTF-8 inside an item: the body is malformed
                raise
            details += e.details
            continue
        key = news[-1].idempotency_key
        if key is not None and key in keys:
            details.append(problem(f"tasks[{i}].idempotency_key", "repeated within the batch"))
        keys.add(key)
    if details:
        raise validation_error(
            details,
            f"{len({d['field'].split('.')[0] for d in details})} tasks in the batch are not valid",
        )
    rows = await service.submit_batch(news)
    return json_response(BatchResult(items=[_view(request, r) for r in rows]), 201)


def _task_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError as e:
        raise ApiError(404, "not_found", "no such task") from e


@routes.get("/v1/tasks/{id}")
async def get_task(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:read")
    task_id = _task_id(request)
    wait = _number(request, "wait", 0.0, 0.0, ctx(request).settings.api.max_wait_seconds)
    store = ctx(request).store
    row = await store.get(task_id, principal.tenant_filter())
    if row is None:
        raise ApiError(404, "not_found", "no such task")
    if wait > 0 and TaskStatus(row["status"]) not in TERMINAL:
        row = await _wait_terminal(request, task_id, principal.tenant_filter(), wait) or row
    history = await store.attempts(task_id)
    return json_response(_view(request, row, list(history)))


async def _wait_terminal(
    request: web.Request, task_id: uuid.UUID, tenant: str | None, seconds: float
) -> Any:
    """Long-poll: re-read the task until it is terminal or the time is up."""
    store = ctx(request).store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pause = 0.02
    row = None
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 1.5, 0.5)
        row = await store.get(task_id, tenant)
        if row is None or TaskStatus(row["status"]) in TERMINAL:
            break
    return row


@routes.get("/v1/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:read")
    return await _page(request, _list_filter(request, principal.tenant_filter()))


@routes.get("/v1/dlq")
async def list_dead_letters(request: web.Request) -> web.Response:
    """FAILED tasks, newest first, paginated and filtered like GET /v1/tasks."""
    principal = await require(request, "tasks:read")
    f = _list_filter(request, principal.tenant_filter())
    return await _page(request, dataclasses.replace(f, status="FAILED"))


async def _page(request: web.Request, f: ListFilter) -> web.Response:
    rows = await ctx(request).store.list_tasks(f)
    more = len(rows) > f.limit - 1
    rows = rows[: f.limit - 1]
    cursor = _encode_cursor(rows[-1]["id"]) if more and rows else None
    items = [_view(request, r) for r in rows]
    return json_response(TaskList(items=items, next_cursor=cursor))


def _list_filter(request: web.Request, tenant: str | None) -> ListFilter:
    q = request.query
    status = q.get("status")
    if status is not None and status not in STATUSES:
        raise validation_error([problem("status", f"must be one of {', '.join(STATUSES)}")])
    labels = {}
    for item in q.getall("label", []):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise validation_error([problem("label", "use label=key:value")])
        if "\x00" in item:
            raise validation_error([problem("label", "must not contain NUL characters")])
        labels[key] = value
    limit = _number(request, "limit", 100.0, 1, 500)
    if not limit.is_integer():
        raise validation_error([problem("limit", "must be a whole number")])
    return ListFilter(
        tenant=tenant,
        status=status,
        type=_pattern_param(request, "type", _TYPE),
        queue=_pattern_param(request, "queue", _QUEUE),
        dag_id=_uuid_param(request, "dag_id"),
        labels=labels or None,
        created_after=_time_param(request, "created_after"),
        created_before=_time_param(request, "created_before"),
        before_id=_decode_cursor(q.get("cursor")),
        limit=int(limit) + 1,
    )


def _pattern_param(request: web.Request, name: str, pattern: re.Pattern[str]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and not pattern.fullmatch(raw):
        raise validation_error([problem(name, f"must match {pattern.pattern}")])
    return raw


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise validation_error([problem(name, f"must be a number from {low:g} to {high:g}")])
    return value


def _uuid_param(request: web.Request, name: str) -> uuid.UUID | None:
    raw = request.query.get(name)
    try:
        return uuid.UUID(raw) if raw is not None else None
    except ValueError as e:
        raise validation_error([problem(name, "must be a UUID")]) from e


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as e:
        raise validation_error([problem(name, "must be an RFC 3339 time")]) from e
    if value.tzinfo is None:
        raise validation_error([problem(name, "needs a time zone offset")])
    # A bound beyond what the driver can send selects the same rows as the nearest one it can.
    return min(max(value, EARLIEST_TIME), LATEST_TIME)


def _encode_cursor(task_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(task_id.bytes).decode().rstrip("=")


def _decode_cursor(raw: str | None) -> uuid.UUID | None:
    if raw is None:
        return None
    try:
        return uuid.UUID(bytes=base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error) as e:
        raise validation_error([problem("cursor", "not a cursor this API returned")]) from e
