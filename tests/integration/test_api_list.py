"""GET /v1/tasks (filters, order, cursor pagination) and GET /v1/tasks/{id}?wait long-polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from taskd import NonRetryableError, TaskContext
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore
from tests.conftest import bearer
from tests.helpers import registry_of, running_worker

Client = TestClient[Any, Any]


async def submit(api: Client, **body: Any) -> str:
    resp = await api.post("/v1/tasks", json={"type": "a", **body}, headers=bearer())
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


async def page(api: Client, **params: str) -> dict[str, Any]:
    resp = await api.get("/v1/tasks", params=params, headers=bearer())
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"items", "next_cursor"}
    return body


async def ids(api: Client, **params: str) -> list[str]:
    return [t["id"] for t in (await page(api, **params))["items"]]


async def walk(api: Client, **params: str) -> list[list[str]]:
    """Every page, following next_cursor until it is null."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        extra = {"cursor": cursor} if cursor else {}
        body = await page(api, **params, **extra)
        pages.append([t["id"] for t in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor does not advance"


async def set_row(store: TaskStore, task_id: str, **values: Any) -> None:
    columns = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=2))
    await store.pool.execute(
        f"UPDATE tasks SET {columns} WHERE id = $1", uuid.UUID(task_id), *values.values()
    )


# --- listing --------------------------------------------------------------------------------------


async def test_empty_list(api: Client) -> None:
    assert await page(api) == {"items": [], "next_cursor": None}


async def test_newest_first(api: Client) -> None:
    made = [await submit(api, payload={"i": i}) for i in range(6)]
    assert await ids(api) == made[::-1]


async def test_filters(api: Client, store: TaskStore) -> None:
    t1 = await submit(api, type="mail", queue="q-a", labels={"team": "core", "env": "prod"})
    t2 = await submit(api, type="mail", queue="q-b", labels={"team": "core"})
    t3 = await submit(api, type="sms", queue="q-a", labels={"env": "prod"})
    t4 = await submit(api, type="sms", queue="q-b", labels={"url": "https://x.io:8443/p"})
    await set_row(store, t2, status="SUCCESS", finished_at=datetime.now(UTC))
    await set_row(store, t4, status="FAILED", finished_at=datetime.now(UTC))
    for when, tid in zip(
        ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"], [t1, t2, t3, t4], strict=True
    ):
        await set_row(store, tid, created_at=datetime.fromisoformat(f"{when}T00:00:00+00:00"))
    between = {"created_after": "2024-01-15T01:00:00+01:00", "created_before": "2024-03-15T00:00Z"}
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, [t4, t3, t2, t1]),
        ({"status": "PENDING"}, [t3, t1]),
        ({"status": "SUCCESS"}, [t2]),
        ({"status": "RUNNING"}, []),
        ({"type": "mail"}, [t2, t1]),
        ({"type": "mai"}, []),
        ({"queue": "q-a"}, [t3, t1]),
        ({"label": "team:core"}, [t2, t1]),
        ({"label": ["team:core", "env:prod"]}, [t1]),
        ({"label": "env:dev"}, []),
        ({"label": "url:https://x.io:8443/p"}, [t4]),  # the value may hold colons
        ({"type": "sms", "queue": "q-b", "status": "FAILED"}, [t4]),
        ({"created_after": "2024-01-15T00:00:00Z"}, [t4, t3, t2]),
        ({"created_after": "2024-02-01T00:00:00Z"}, [t4, t3]),  # strictly after
        ({"created_before": "2024-03-01T00:00:00Z"}, [t2, t1]),  # strictly before
        (between, [t3, t2]),
        ({"created_after": "2024-01-31T19:00:00-05:00"}, [t4, t3]),  # = 2024-02-01T00:00Z
        ({"dag_id": str(uuid.uuid4())}, []),
    ]  # fmt: skip
    failures = []
    for params, expected in cases:
        resp = await api.get("/v1/tasks", params=params, headers=bearer())
        got = [t["id"] for t in (await resp.json())["items"]] if resp.status == 200 else resp.status
        if got != expected:
            failures.append(f"{params}: {got} != {expected}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("total", [7, 6, 2, 1])
async def test_cursor_walks_every_task_exactly_once(api: Client, total: int) -> None:
    resp = await api.post(
        "/v1/tasks/batch", json={"tasks": [{"type": "a"}] * total}, headers=bearer()
    )
    assert resp.status == 201
    made = [t["id"] for t in (await resp.json())["items"]]
    pages = await walk(api, limit="2")
    assert [len(p) for p in pages] == [2] * (total // 2) + ([1] if total % 2 else [])
    walked = [tid for p in pages for tid in p]
    assert sorted(walked) == sorted(made)
    assert walked == await ids(api)  # the same newest-first order as one big page


async def test_cursor_with_filters_and_new_arrivals(api: Client) -> None:
    wanted = [await submit(api, type="keep") for _ in range(5)]
    for _ in range(3):
        await submit(api, type="skip")
    first = await page(api, type="keep", limit="2")
    assert [t["id"] for t in first["items"]] == wanted[::-1][:2]
    # Tasks submitted mid-walk are newer than the cursor: they never shift later pages.
    await submit(api, type="keep")
    rest = []
    cursor = first["next_cursor"]
    while cursor:
        body = await page(api, type="keep", limit="2", cursor=cursor)
        rest += [t["id"] for t in body["items"]]
        cursor = body["next_cursor"]
    assert [t["id"] for t in first["items"]] + rest == wanted[::-1]


async def test_default_and_maximum_limits(api: Client) -> None:
    resp = await api.post(
        "/v1/tasks/batch", json={"tasks": [{"type": "a"}] * 501}, headers=bearer()
    )
    assert resp.status == 201
    default = await page(api)
    assert len(default["items"]) == 100
    assert default["next_cursor"] is not None
    biggest = await page(api, limit="500")
    assert len(biggest["items"]) == 500
    assert biggest["next_cursor"] is not None
    last = await page(api, limit="500", cursor=biggest["next_cursor"])
    assert (len(last["items"]), last["next_cursor"]) == (1, None)


# --- GET ?wait ------------------------------------------------------------------------------------


class ReadSpy:
    """Counts the API's reads of one task, so a test knows the long-poll is under way."""

    def __init__(self, store: TaskStore, monkeypatch: pytest.MonkeyPatch, task_id: str) -> None:
        self.reads = 0
        self.polling = asyncio.Event()
        original = store.get
        wanted = uuid.UUID(task_id)

        async def get(tid: uuid.UUID, tenant: str | None) -> Any:
            row = await original(tid, tenant)
            if tid == wanted:
                self.reads += 1
                if self.reads >= 2:  # the first read, then at least one poll
                    self.polling.set()
            return row

        monkeypatch.setattr(store, "get", get)


async def test_wait_returns_as_soon_as_the_task_is_terminal(
    api: Client, store: TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tid = await submit(api)
    spy = ReadSpy(store, monkeypatch, tid)
    started = time.monotonic()
    request = asyncio.create_task(api.get(f"/v1/tasks/{tid}?wait=30", headers=bearer()))
    await asyncio.wait_for(spy.polling.wait(), 10)
    assert not request.done()
    await set_row(store, tid, status="SUCCESS", result={"ok": True}, finished_at=datetime.now(UTC))
    resp = await asyncio.wait_for(request, 10)
    assert time.monotonic() - started < 10  # long before the 30 s wait is up
    assert resp.status == 200
    task = await resp.json()
    assert (task["status"], task["result"]) == ("SUCCESS", {"ok": True})
    assert "attempt_history" in task


async def test_wait_follows_a_worker_to_the_end(
    api: Client,
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def gated(ctx: TaskContext, payload: Any) -> Any:
        started.set()
        await release.wait()
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return {"echo": payload, "attempt": ctx.attempt}

    tid = await submit(api, type="t.gated", queue=queue_name, payload={"x": 1})
    async with running_worker(settings, store, queue, registry_of(t__gated=gated)):
        await asyncio.wait_for(started.wait(), 10)
        spy = ReadSpy(store, monkeypatch, tid)
        began = time.monotonic()
        request = asyncio.create_task(api.get(f"/v1/tasks/{tid}?wait=30", headers=bearer()))
        await asyncio.wait_for(spy.polling.wait(), 10)
        assert not request.done()
        release.set()
        resp = await asyncio.wait_for(request, 20)
        assert time.monotonic() - began < 20
    assert resp.status == 200
    task = await resp.json()
    assert task["status"] == "SUCCESS"
    assert task["attempts"] == 2
    assert task["result"] == {"echo": {"x": 1}, "attempt": 2}
    assert task["started_at"] is not None and task["finished_at"] is not None
    history = task["attempt_history"]
    assert [(h["attempt"], h["outcome"]) for h in history] == [(1, "ERROR"), (2, "SUCCESS")]
    for h in history:
        assert set(h) == {"attempt", "worker", "started_at", "finished_at", "outcome", "error"}
        assert h["worker"] and h["started_at"] and h["finished_at"]
    assert history[0]["error"] == {
        "type": "RuntimeError",
        "message": "first try fails",
        "retryable": True,
    }
    assert history[1]["error"] is None


async def test_failed_task_shows_its_error(
    api: Client, settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    async def refuse(ctx: TaskContext, payload: Any) -> None:
        raise NonRetryableError("bad input")

    tid = await submit(api, type="t.refuse", queue=queue_name)
    async with running_worker(settings, store, queue, registry_of(t__refuse=refuse)):
        resp = await api.get(f"/v1/tasks/{tid}?wait=20", headers=bearer())
    task = await resp.json()
    assert (task["status"], task["attempts"]) == ("FAILED", 1)
    assert task["error"] == {
        "type": "NonRetryableError",
        "message": "bad input",
        "retryable": False,
    }
    assert [h["outcome"] for h in task["attempt_history"]] == ["ERROR"]
    failed = await ids(api, status="FAILED")
    assert failed == [tid]


async def test_wait_ends_when_its_time_is_up(api: Client) -> None:
    tid = await submit(api)
    started = time.monotonic()
    resp = await api.get(f"/v1/tasks/{tid}?wait=0.3", headers=bearer())
    elapsed = time.monotonic() - started
    assert resp.status == 200
    assert (await resp.json())["status"] == "PENDING"
    assert 0.3 <= elapsed < 5


async def test_wait_on_a_terminal_task_answers_at_once(api: Client, store: TaskStore) -> None:
    tid = await submit(api)
    await set_row(store, tid, status="CANCELLED", finished_at=datetime.now(UTC))
    started = time.monotonic()
    resp = await api.get(f"/v1/tasks/{tid}?wait=60", headers=bearer())
    assert time.monotonic() - started < 5
    assert (await resp.json())["status"] == "CANCELLED"
    resp = await api.get(f"/v1/tasks/{tid}?wait=0", headers=bearer())
    assert resp.status == 200
