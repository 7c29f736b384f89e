"""The OpenAPI 3.1 document of API.md, built from the same msgspec types the routes decode."""

from __future__ import annotations

import html
from functools import cache
from typing import Any

import msgspec
from aiohttp import web

from taskd import __version__
from taskd.api.explain import Explanation
from taskd.api.schedule_openapi import SCHEMAS as SCHEDULE_SCHEMAS
from taskd.api.schedule_openapi import schedule_paths
from taskd.api.schemas import (
    BatchResult,
    DagTaskSubmission,
    DagView,
    ErrorResponse,
    TaskList,
    TaskSubmission,
    TaskView,
)

_REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_ERRORS = {
    str(code): {"description": text, **_json(_ref("ErrorResponse"))}
    for code, text in [
        (400, "malformed JSON"),
        (401, "missing or invalid token"),
        (403, "scope missing"),
        (404, "not found"),
        (409, "conflict"),
        (413, "body too large"),
        (415, "not JSON"),
        (422, "validation failed"),
        (503, "a dependency is down (see Retry-After)"),
    ]
}


def _op(summary: str, scope: str | None, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **_ERRORS}, **extra}
    if scope:
        op["security"] = [{"bearer": []}]
        op["description"] = f"Needs scope `{scope}`."
    return op


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _paths() -> dict[str, Any]:
    task_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    submit_body = {"required": True, **_json(_ref("TaskSubmission"))}
    batch_body = {
        "required": True,
        **_json(
            {
                "type": "object",
                "required": ["tasks"],
                "properties": {
                    "tasks": {"type": "array", "maxItems": 1000, "items": _ref("TaskSubmission")}
                },
            }
        ),
    }
    list_params = [
        _query("status", "filter by status"),
        _query("type", "filter by type"),
        _query("queue", "filter by queue"),
        _query("dag_id", "filter by DAG"),
        _query("label", "k:v, repeatable"),
        _query("created_after", "RFC 3339"),
        _query("created_before", "RFC 3339"),
        _query("limit", "1..500", {"type": "integer", "minimum": 1, "maximum": 500}),
        _query("cursor", "next_cursor of the previous page"),
    ]
    plain = {"200": {"description": "ok"}}
    return {
        "/v1/tasks": {
            "post": _op(
                "Submit a task",
                "tasks:write",
                {
                    "201": {"description": "created", **_json(_ref("TaskView"))},
                    "200": {"description": "idempotent replay", **_json(_ref("TaskView"))},
                },
                requestBody=submit_body,
            ),
            "get": _op(
                "List tasks",
                "tasks:read",
                {"200": {"description": "a page", **_json(_ref("TaskList"))}},
                parameters=list_params,
            ),
        },
        "/v1/tasks/batch": {
            "post": _op(
                "Submit up to 1000 tasks, all or nothing",
                "tasks:write",
                {"201": {"description": "created", **_json(_ref("BatchResult"))}},
                requestBody=batch_body,
            )
        },
        "/v1/tasks/{id}": {
            "get": _op(
                "A task with its attempt history",
                "tasks:read",
                {"200": {"description": "the task", **_json(_ref("TaskView"))}},
                parameters=[
                    task_id,
                    _query(
                        "wait",
                        "long-poll seconds (<= 60)",
                        {"type": "number", "minimum": 0, "maximum": 60},
                    ),
                ],
            )
        },
        **_dag_paths(task_id),
        **schedule_paths(_op, _ref, _json, _query),
        "/healthz": {"get": _op("Liveness", None, plain)},
        "/readyz": {"get": _op("Readiness: Postgres and Redis answer", None, plain)},
        "/metrics": {"get": _op("Prometheus metrics", None, plain)},
    }


def _dag_paths(task_id: dict[str, Any]) -> dict[str, Any]:
    dag_id = {**task_id, "description": "DAG id"}
    dag_body = {"required": True, **_json(_ref("DagSubmissionDoc"))}
    return {
        "/v1/dlq": {
            "get": _op(
                "Dead letters: FAILED tasks, newest first (filters and cursor as /v1/tasks)",
                "tasks:read",
                {"200": {"description": "a page", **_json(_ref("TaskList"))}},
            )
        },
        "/v1/tasks/{id}/cancel": {
            "post": _op(
                "Cancel: WAITING/PENDING end now; RUNNING handlers are stopped on their worker",
                "tasks:write",
                {"200": {"description": "the task", **_json(_ref("TaskView"))}},
                parameters=[task_id],
            )
        },
        "/v1/tasks/{id}/explain": {
            "get": _op(
                "Why the task is not running (or is): parents, due time, queue position, "
                "live workers for its queue and type, lease holder",
                "tasks:read",
                {"200": {"description": "the reasons", **_json(_ref("Explanation"))}},
                parameters=[task_id],
            )
        },
        "/v1/tasks/{id}/retry": {
            "post": _op(
                "Redrive a FAILED, CANCELLED or UPSTREAM_FAILED task (fresh attempt budget)",
                "tasks:write",
                {"200": {"description": "the task, back to work", **_json(_ref("TaskView"))}},
                parameters=[task_id],
            )
        },
        "/v1/dags": {
            "post": _op(
                "Submit a DAG: all tasks and edges, or nothing",
                "tasks:write",
                {"201": {"description": "created", **_json(_ref("DagView"))}},
                requestBody=dag_body,
            )
        },
        "/v1/dags/{id}": {
            "get": _op(
                "A DAG: tasks by key, edges, aggregate status",
                "tasks:read",
                {"200": {"description": "the DAG", **_json(_ref("DagView"))}},
                parameters=[dag_id],
            )
        },
    }


class DagSubmissionDoc(msgspec.Struct):
    """The documented shape of POST /v1/dags (items are decoded one by one)."""

    name: str
    tasks: list[DagTaskSubmission]


@cache
def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [
            TaskSubmission,
            TaskView,
            TaskList,
            BatchResult,
            ErrorResponse,
            DagSubmissionDoc,
            DagView,
            Explanation,
            *SCHEDULE_SCHEMAS,
        ],
        ref_template=_REF,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taskd",
            "version": __version__,
            "description": "The taskd REST API v1 (shared/API.md is the contract).",
        },
        "paths": _paths(),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document())


async def docs_page(request: web.Request) -> web.Response:
    """A plain, script-free rendering of the document: no CDN, works under a strict CSP."""
    rows = []
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            codes = ", ".join(sorted(op["responses"]))
            rows.append(
                f"<tr><td><code>{method.upper()} {html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td>"
                f"<td>{html.escape(op.get('description', ''))}</td><td>{codes}</td></tr>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>taskd API</title></head><body>"
        "<h1>taskd API v1</h1><p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>."
        "</p><table border='1' cellpadding='4'><tr><th>route</th><th>what</th><th>auth</th>"
        f"<th>responses</th></tr>{''.join(rows)}</table></body></html>"
    )
    return web.Response(text=page, content_type="text/html")
