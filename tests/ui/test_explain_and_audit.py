"""GET /v1/tasks/{id}/explain, the audit log of API actions, `taskd token --ui`, and a
shutdown that open event streams do not hold up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from taskd.queue.presence import WorkerInfo, WorkerPresence
from taskd.queue.sessions import SessionStore
from tests.conftest import REDIS_URL, SECRET, bearer
from tests.ui.conftest import Ui, writer
from tests.ui.test_flows import Switch, blocked, eventually_status

ROOT = Path(__file__).resolve().parents[2]


async def reasons(client: TestClient[Any, Any], task_id: str) -> list[str]:
    resp = await client.get(f"/v1/tasks/{task_id}/explain", headers=bearer())
    assert resp.status == 200, await resp.text()
    return [r["code"] for r in (await resp.json())["reasons"]]


async def test_explain_says_why_a_task_is_not_running(ui: Ui) -> None:
    c = ui.client
    later = await ui.submit("t.block", delay=600)
    due = await ui.submit("t.block")
    other = await ui.submit("t.unknown")
    dag_resp = await c.post(
        "/v1/dags",
        headers=bearer(),
        json={
            "name": "d",
            "tasks": [
                {"key": "a", "type": "t.block", "queue": ui.queue_name, "delay": 600},
                {"key": "b", "type": "t.block", "queue": ui.queue_name, "depends_on": ["a"]},
            ],
        },
    )
    child = (await dag_resp.json())["tasks"]["b"]["id"]
    assert await reasons(c, later) == ["due_later", "no_worker_for_queue"]
    assert await reasons(c, due) == ["no_worker_for_queue"]
    body = await (await c.get(f"/v1/tasks/{child}/explain", headers=bearer())).json()
    assert body["reasons"][0]["code"] == "waiting_on_parents"
    assert body["reasons"][0]["parents"][0]["key"] == "a"
    # A worker serves the queue, but not the type (announced, not running: nothing leases).
    presence = WorkerPresence(ui.queue.client)
    info = WorkerInfo(
        id="w-other",
        host="h",
        pid=1,
        queues=(ui.queue_name,),
        types=("t.else",),
        slots=1,
        in_flight=0,
        started_at=0.0,
    )
    await presence.announce(info, 60_000)
    assert await reasons(c, other) == ["no_worker_for_type"]
    await presence.retire("w-other")
    async with ui.worker(t__block=blocked):
        await eventually_status(ui, due, "RUNNING")
        assert await reasons(c, due) == ["leased"]
        assert await reasons(c, later) == ["due_later"]
        await c.post(f"/v1/tasks/{due}/cancel", headers=bearer())  # the worker stops at once
    resp = await c.get(f"/v1/tasks/{due}/explain", headers=bearer("mallory"))
    assert resp.status == 404


async def test_api_cancel_and_retry_are_audited(ui: Ui) -> None:
    async with ui.worker(t__ship=Switch()):
        task_id = await ui.submit("t.ship", max_retries=0)
        await eventually_status(ui, task_id, "FAILED")
    resp = await ui.client.post(f"/v1/tasks/{task_id}/retry", headers=bearer())
    assert resp.status == 200
    resp = await ui.client.post(f"/v1/tasks/{task_id}/cancel", headers=bearer())
    assert resp.status == 200
    rows = await ui.store.pool.fetch(
        "SELECT actor, tenant, via, action, task_ids, count FROM audit_log ORDER BY id"
    )
    assert [(r["actor"], r["via"], r["action"], r["count"]) for r in rows] == [
        ("alice", "api", "retry", 1),
        ("alice", "api", "cancel", 1),
    ]
    assert [str(i) for i in rows[0]["task_ids"]] == [task_id]


def test_token_ui_prints_a_one_time_sign_in_link() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "taskd", "token", "--ui", "--sub", "dana", "--ui-url", "http://x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "TASKD_AUTH__JWT_SECRET": SECRET, "TASKD_REDIS__URL": REDIS_URL},
    )
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip()
    assert link.startswith("http://x/ui/login?ticket=")
    ticket = link.split("ticket=", 1)[1]

    async def take() -> tuple[str | None, str | None]:
        from taskd.queue.client import RedisQueue

        q = RedisQueue.from_url(REDIS_URL)
        try:
            sessions = SessionStore(q.client)
            return await sessions.take_ticket(ticket), await sessions.take_ticket(ticket)
        finally:
            await q.close()

    first, second = asyncio.run(take())
    assert first is not None and first.count(".") == 2  # the JWT, once
    assert second is None


async def test_shutdown_ends_open_event_streams_at_once(ui: Ui) -> None:
    login = await ui.client.post(
        "/ui/login", data={"token": writer()}, headers={"Origin": ui.base}, allow_redirects=False
    )
    assert login.status == 303
    stream = await ui.client.get("/ui/events?topic=overview")
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    first = await stream.content.readline()
    assert first.startswith(b"retry:")
    started = time.monotonic()
    await ui.client.server.close()
    assert time.monotonic() - started < 3.0
    stream.close()
