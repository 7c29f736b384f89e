"""Cancellation: queued tasks end at once, running handlers are stopped on their worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from taskd import TaskContext
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.services.maintenance import Reaper
from taskd.store.tasks import RunDefaults, TaskStore
from tests.conftest import bearer
from tests.helpers import eventually, registry_of, running_worker, wait_terminal


async def post(api: TestClient[Any, Any], queue: str, **fields: Any) -> Any:
    resp = await api.post(
        "/v1/tasks", headers=bearer(), json={"type": "t.sleep", "queue": queue, **fields}
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_pending_and_delayed_tasks_are_cancelled_at_once_and_never_run(
    api: TestClient[Any, Any],
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
) -> None:
    ran: list[str] = []

    async def record(ctx: TaskContext, payload: Any) -> None:
        ran.append(ctx.task_id)

    pending = await post(api, queue_name)
    delayed = await post(api, queue_name, delay=0.3)
    for task in (pending, delayed):
        resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=bearer())
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "CANCELLED" and body["finished_at"]
        assert await queue.tracked(queue_name, task["id"]) is None
    marker = await post(api, queue_name, delay=0.4)
    async with running_worker(settings, store, queue, registry_of(t__sleep=record)):
        await wait_terminal(store, marker["id"])  # later than both cancelled tasks were due
    assert ran == [marker["id"]]
    again = await api.post(f"/v1/tasks/{pending['id']}/cancel", headers=bearer())
    assert again.status == 409
    assert (await again.json())["error"]["details"] == [{"field": "status", "problem": "CANCELLED"}]


async def test_cancel_of_a_running_handler_stops_it_within_a_second(
    api: TestClient[Any, Any],
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
) -> None:
    started = asyncio.Event()
    stopped: list[float] = []

    async def sleep(ctx: TaskContext, payload: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.append(time.monotonic())
            raise

    task = await post(api, queue_name, max_retries=3)
    async with running_worker(settings, store, queue, registry_of(t__sleep=sleep)):
        await asyncio.wait_for(started.wait(), 10)
        asked = time.monotonic()
        resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=bearer())
        assert resp.status == 200
        body = await resp.json()
    assert stopped and stopped[0] - asked < 1.0
    assert body["status"] == "CANCELLED"
    assert [(h["attempt"], h["outcome"]) for h in body["attempt_history"]] == [(1, "CANCELLED")]
    row = await store.get(uuid.UUID(task["id"]), None)
    assert (row["status"], row["attempt"]) == ("CANCELLED", 1)  # not retried


async def test_cancel_reaches_a_worker_through_its_heartbeat_too(
    api: TestClient[Any, Any], store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    task = await post(api, queue_name)
    leased = await queue.lease(queue_name, 1, "w:1", 60_000)
    await store.flip_running(leased.ids, leased.tokens, "w", RunDefaults([], [], [], 3, 300.0))
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=bearer())
    assert (await resp.json())["status"] == "RUNNING"  # no live worker answered in time
    assert await queue.extend(queue_name, [(task["id"], leased.tokens[0])], 60_000) == [3]


@pytest.fixture
def short_cancel_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskd.api import dag_routes

    monkeypatch.setattr(dag_routes, "CANCEL_WAIT_SECONDS", 0.1)


async def test_a_cancelled_task_whose_worker_died_ends_cancelled_not_retried(
    api: TestClient[Any, Any],
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    short_cancel_wait: None,
) -> None:
    task = await post(api, queue_name, max_retries=5)
    leased = await queue.lease(queue_name, 1, "dead:1", 300)
    await store.flip_running(leased.ids, leased.tokens, "dead", RunDefaults([], [], [], 3, 300.0))
    resp = await api.post(f"/v1/tasks/{task['id']}/cancel", headers=bearer())
    assert (await resp.json())["status"] == "RUNNING"
    await eventually(Reaper(store, queue, 3).run_once)
    row = await store.get(uuid.UUID(task["id"]), None)
    assert row["status"] == "CANCELLED"
    assert await queue.tracked(queue_name, task["id"]) is None


async def test_cancelling_a_dag_task_cuts_off_its_descendants(
    api: TestClient[Any, Any], store: TaskStore, queue_name: str
) -> None:
    resp = await api.post(
        "/v1/dags",
        headers=bearer(),
        json={
            "name": "c",
            "tasks": [
                {"key": "A", "type": "t.x", "queue": queue_name},
                {"key": "B", "type": "t.x", "queue": queue_name, "depends_on": ["A"]},
                {"key": "C", "type": "t.x", "queue": queue_name, "depends_on": ["B"]},
            ],
        },
    )
    dag = await resp.json()
    ids = {k: t["id"] for k, t in dag["tasks"].items()}
    resp = await api.post(f"/v1/tasks/{ids['B']}/cancel", headers=bearer())
    assert (await resp.json())["status"] == "CANCELLED"
    c = await store.get(uuid.UUID(ids["C"]), None)
    assert c["status"] == "UPSTREAM_FAILED" and "upstream task B" in c["error"]["message"]
    a = await store.get(uuid.UUID(ids["A"]), None)
    assert a["status"] == "PENDING"


async def test_unknown_and_foreign_tasks_are_404(
    api: TestClient[Any, Any], queue_name: str
) -> None:
    task = await post(api, queue_name)
    for path in (f"/v1/tasks/{uuid.uuid4()}/cancel", f"/v1/tasks/{task['id']}/cancel"):
        who = "alice" if "cancel" in path and task["id"] not in path else "mallory"
        resp = await api.post(path, headers=bearer(who))
        assert resp.status == 404
    forbidden = await api.post(
        f"/v1/tasks/{task['id']}/cancel", headers=bearer(scopes=("tasks:read",))
    )
    assert forbidden.status == 403
