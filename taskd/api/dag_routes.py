"""DAG routes (POST /v1/dags, GET /v1/dags/{id}) and redrive (POST /v1/tasks/{id}/retry)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any, NoReturn

import asyncpg
from aiohttp import web

from taskd.api.audit import audit
from taskd.api.context import ctx, require
from taskd.api.decode import decode, read_json
from taskd.api.errors import ApiError, problem, validation_error
from taskd.api.graphs import GraphService, Node
from taskd.api.representation import rfc3339
from taskd.api.routes import _task_id, _view, _wait_terminal, json_response
from taskd.api.schemas import DagSubmission, DagTaskSubmission, DagView, EdgeView
from taskd.errors import DependencyUnavailable
from taskd.store.dags import DagStore
from taskd.store.tasks import TaskStore
from taskd.types import TERMINAL, TaskStatus

routes = web.RouteTableDef()
log = logging.getLogger("taskd.api")
# How long POST .../cancel waits for a RUNNING task's worker to record CANCELLED.
CANCEL_WAIT_SECONDS = 5.0


@routes.post("/v1/dags")
async def submit_dag(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    body = decode(await read_json(request), DagSubmission)
    nodes = _nodes(request, body, principal.tenant)
    dag_id = await GraphService(ctx(request).submit).submit_dag(principal.tenant, body.name, nodes)
    stored = await DagStore(ctx(request).store).get(dag_id, None)
    assert stored is not None  # just committed
    return json_response(_dag_view(request, stored.dag, stored.tasks, None), 201)


def _nodes(request: web.Request, body: DagSubmission, tenant: str) -> list[Node]:
    service = ctx(request).submit
    nodes, details = [], []
    for i, raw in enumerate(body.tasks):
        try:
            sub = decode(raw, DagTaskSubmission, prefix=f"tasks[{i}]")
            new = service.prepare(sub, tenant, None, f"tasks[{i}].")
        except ApiError as e:
            if e.status != 422:
                raise
            details += e.details
            continue
        nodes.append(Node(sub.key, new, list(sub.depends_on)))
    if details:
        raise validation_error(details)
    return nodes


@routes.get("/v1/dags/{id}")
async def get_dag(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:read")
    try:
        dag_id = uuid.UUID(request.match_info["id"])
    except ValueError as e:
        raise ApiError(404, "not_found", "no such DAG") from e
    stored = await DagStore(ctx(request).store).get(dag_id, principal.tenant_filter())
    if stored is None:
        raise ApiError(404, "not_found", "no such DAG")
    return json_response(_dag_view(request, stored.dag, stored.tasks, stored.edges))


def _dag_view(
    request: web.Request,
    dag: asyncpg.Record,
    tasks: Sequence[asyncpg.Record],
    edges: Sequence[tuple[uuid.UUID, uuid.UUID]] | None,
) -> DagView:
    key_of = {r["id"]: r["dag_key"] for r in tasks}
    view = DagView(
        id=str(dag["id"]),
        name=dag["name"],
        status=aggregate_status([r["status"] for r in tasks]),
        created_at=rfc3339(dag["created_at"]) or "",
        tasks={r["dag_key"]: _view(request, r) for r in tasks},
    )
    if edges is not None:
        view.edges = [EdgeView(key_of.get(p, str(p)), key_of.get(c, str(c))) for p, c in edges]
    return view


def aggregate_status(statuses: Sequence[str]) -> Any:
    """RUNNING until every task is terminal; then SUCCESS if all succeeded, else FAILED."""
    if any(TaskStatus(s) not in TERMINAL for s in statuses):
        return "RUNNING"
    return "SUCCESS" if all(s == "SUCCESS" for s in statuses) else "FAILED"


@routes.post("/v1/tasks/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    """WAITING/PENDING end at once; a RUNNING task's handler is stopped on its worker."""
    principal = await require(request, "tasks:write")
    task_id = _task_id(request)
    c = ctx(request)
    tenant = principal.tenant_filter()
    row = await DagStore(c.store).cancel(task_id, tenant)
    if row is None:
        await _not_live(c.store, task_id, tenant, "cancelled")
    assert row is not None
    await audit(request, principal, "cancel", [task_id])
    marker_ms = int(c.settings.worker.lease_seconds * 4000)
    try:
        await c.queue.cancel(row["queue"], str(task_id), marker_ms)
    except DependencyUnavailable as e:
        # Postgres holds the request: the worker's lease expires and the task ends CANCELLED.
        log.warning("cancel of %s recorded, but Redis is unreachable: %s", task_id, e)
    if row["was"] == "RUNNING":
        row = await _wait_terminal(request, task_id, tenant, CANCEL_WAIT_SECONDS) or row
    return json_response(_view(request, row, list(await c.store.attempts(task_id))))


async def _not_live(
    store: TaskStore, task_id: uuid.UUID, tenant: str | None, verb: str
) -> NoReturn:
    """404 for an unknown (or another tenant's) task, else 409 naming its status."""
    current = await store.get(task_id, tenant)
    if current is None:
        raise ApiError(404, "not_found", "no such task")
    raise ApiError(
        409,
        "conflict",
        f"the task is {current['status']} and cannot be {verb}",
        [problem("status", current["status"])],
    )


@routes.post("/v1/tasks/{id}/retry")
async def redrive(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    task_id = _task_id(request)
    c = ctx(request)
    row = await DagStore(c.store).redrive(task_id, principal.tenant_filter())
    if row is None:
        await _not_live(c.store, task_id, principal.tenant_filter(), "retried")
    assert row is not None
    await audit(request, principal, "retry", [task_id])
    await c.submit.enqueue_pending([row])
    return json_response(_view(request, row, list(await c.store.attempts(task_id))))
