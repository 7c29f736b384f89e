"""/healthz, /readyz, /metrics, /openapi.json, /docs, and answers while a dependency is down."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from taskd.api.app import create_app
from taskd.api.auth import Authenticator
from taskd.api.context import ApiContext
from taskd.api.submit import SubmitService
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.store.pool import create_pool
from taskd.store.tasks import TaskStore
from tests.conftest import bearer, make_settings
from tests.integration.test_api_validation import expect_error

Client = TestClient[Any, Any]

SUBMISSION_FIELDS = {
    "type", "payload", "queue", "priority", "delay", "run_at", "max_retries", "backoff",
    "timeout", "idempotency_key", "depends_on", "notify", "labels",
}  # fmt: skip
TASK_FIELDS = {
    "id", "type", "queue", "priority", "status", "payload", "labels", "attempts", "max_retries",
    "timeout", "run_at", "created_at", "started_at", "finished_at", "result", "error",
    "depends_on", "dag_id", "idempotency_key", "notify",
}  # fmt: skip
PIPELINE_ROUTES = [
    ("post", "/v1/tasks"),
    ("post", "/v1/tasks/batch"),
    ("get", "/v1/tasks/{id}"),
    ("get", "/v1/tasks"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
]


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve(settings: Settings, store: TaskStore, queue: RedisQueue) -> AsyncIterator[Client]:
    auth = Authenticator(settings.auth)
    context = ApiContext(settings, store, queue, auth, SubmitService(store, queue, settings))
    client = TestClient(TestServer(create_app(context)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await auth.close()


async def test_healthz_needs_no_token(api: Client) -> None:
    resp = await api.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_readyz_when_both_dependencies_answer(api: Client) -> None:
    resp = await api.get("/readyz")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_redis_down_readyz_503_but_submissions_are_accepted(
    settings: Settings, store: TaskStore
) -> None:
    dead = RedisQueue.from_url(f"redis://127.0.0.1:{closed_port()}/0", connect_timeout=0.5)
    try:
        async with serve(settings, store, dead) as api:
            started = time.monotonic()
            resp = await api.get("/readyz")
            assert time.monotonic() - started < 5
            assert resp.status == 503
            body = await resp.json()
            assert body["status"] != "ok"
            assert body["checks"]["postgres"] == "ok"
            assert body["checks"]["redis"] != "ok"
            # Postgres committed it: accepted, to be queued when Redis is back.
            resp = await api.post("/v1/tasks", json={"type": "a"}, headers=bearer())
            assert resp.status == 201, await resp.text()
            tid = (await resp.json())["id"]
            resp = await api.get(f"/v1/tasks/{tid}", headers=bearer())
            assert (await resp.json())["status"] == "PENDING"
    finally:
        await dead.close()


async def test_postgres_down_is_503_with_retry_after(queue: RedisQueue) -> None:
    settings = make_settings(
        f"postgresql://postgres@127.0.0.1:{closed_port()}/none",
        database={"min_connections": 0, "connect_timeout": 0.5},
    )
    pool = await create_pool(settings.database)
    try:
        async with serve(settings, TaskStore(pool), queue) as api:
            resp = await api.get("/readyz")
            assert resp.status == 503
            checks = (await resp.json())["checks"]
            assert checks["redis"] == "ok"
            assert checks["postgres"] != "ok"
            requests = [
                api.post("/v1/tasks", json={"type": "a"}, headers=bearer()),
                api.post("/v1/tasks/batch", json={"tasks": [{"type": "a"}]}, headers=bearer()),
                api.get(f"/v1/tasks/{uuid.uuid4()}", headers=bearer()),
                api.get("/v1/tasks", headers=bearer()),
            ]
            for request in requests:
                resp = await request
                await expect_error(resp, 503, "unavailable")
                assert int(resp.headers["Retry-After"]) > 0
    finally:
        await pool.close()


async def test_metrics_count_submissions(api: Client, queue_name: str) -> None:
    resp = await api.post(
        "/v1/tasks", json={"type": "metric.probe", "queue": queue_name}, headers=bearer()
    )
    assert resp.status == 201
    resp = await api.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert "# TYPE taskd_tasks_submitted_total counter" in text
    line = f'taskd_tasks_submitted_total{{queue="{queue_name}",type="metric.probe"}} 1.0'
    assert line in text.splitlines()
    assert 'taskd_http_requests_total{method="POST",route="/v1/tasks",status="201"}' in text


async def test_openapi_is_valid_3_1_and_documents_every_route(api: Client) -> None:
    resp = await api.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    validate(doc, cls=OpenAPIV31SpecValidator)
    paths = doc["paths"]
    for method, path in PIPELINE_ROUTES:
        assert method in paths.get(path, {}), (method, path)
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in api.server.app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        # the dashboard (/ui) is HTML for people, not part of the REST API
        and not route.resource.canonical.startswith("/ui")
    } - {("get", "/openapi.json"), ("get", "/docs")}
    documented = {(m, p) for p, ops in paths.items() for m in ops if m != "parameters"}
    assert served <= documented, served - documented
    assert documented <= served, documented - served
    for path, ops in paths.items():
        for method, op in ops.items():
            if path.startswith("/v1/"):
                assert op.get("security"), (method, path)
                assert {"401", "403", "422"} <= set(op["responses"]), (method, path)


async def test_openapi_schemas_match_the_contract(api: Client) -> None:
    doc = await (await api.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    submission = schemas["TaskSubmission"]
    assert set(submission["properties"]) == SUBMISSION_FIELDS
    assert submission["required"] == ["type"]
    assert submission.get("additionalProperties") is False
    view = schemas["TaskView"]
    assert set(view["properties"]) >= TASK_FIELDS
    assert set(view["required"]) == TASK_FIELDS
    assert "attempt_history" in view["properties"]
    priority = submission["properties"]["priority"]
    assert (priority["minimum"], priority["maximum"]) == (-100, 100)
    get_op = doc["paths"]["/v1/tasks/{id}"]["get"]
    wait = next(p for p in get_op["parameters"] if p["name"] == "wait")
    assert wait["schema"]["maximum"] == 60
    error = schemas["ErrorBody"]
    assert set(error["required"]) == {"code", "message", "details"}


async def test_docs_page_renders_the_document(api: Client) -> None:
    resp = await api.get("/docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert page.lower().startswith("<!doctype html>")
    assert "/openapi.json" in page
    for method, path in PIPELINE_ROUTES:
        assert f"{method.upper()} {path}" in page, path


async def test_unknown_route_and_wrong_method_use_the_error_format(api: Client) -> None:
    await expect_error(await api.get("/v2/tasks", headers=bearer()), 404, "not_found")
    await expect_error(await api.get("/nope"), 404, "not_found")
    resp = await api.delete("/v1/tasks", headers=bearer())
    await expect_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]
    resp = await api.put(f"/v1/tasks/{uuid.uuid4()}", headers=bearer())
    await expect_error(resp, 405, "method_not_allowed")
