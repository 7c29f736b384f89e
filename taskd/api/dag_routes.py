"""DAG routes (POST /v1/dags, GET /v1/dags/{id}) and redrive (POST /v1/tasks/{id}/retry)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiohttp import web

from taskd.api.context import ctx, require
from taskd.api.decode import decode, read_json
from taskd.api.errors import ApiError, problem, validation_error
from taskd.api.graphs import GraphService, Node
from taskd.api.representation import rfc3339
from taskd.api.routes import _task_id, _view, json_response
from taskd.api.schemas import DagSubmission, DagTaskSubmission, DagView, EdgeView
from taskd.store.dags import DagStore
from taskd.types import TERMINAL, TaskStatus

routes = web.RouteTableDef()


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


@routes.post("/v1/tasks/{id}/retry")
async def redrive(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:write")
    task_id = _task_id(request)
    c = ctx(request)
    row = await DagStore(c.store).redrive(task_id, principal.tenant_filter())
    if row is None:
        current = await c.store.get(task_id, principal.tenant_filter())
        if current is None:
            raise ApiError(404, "not_found", "no such task")
        raise ApiError(
            409,
            "conflict",
            f"the task is {current['status']}; only FAILED, CANCELLED or "
            "UPSTREAM_FAILED tasks can be retried",
            [problem("status", current["status"])],
        )
    await c.submit.enqueue_pending([row])
    return json_response(_view(request, row, list(await c.store.attempts(task_id))))
