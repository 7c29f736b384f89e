"""POST /v1/tasks and /v1/tasks/batch: the task representation, idempotency, all-or-nothing."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient

from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore
from tests.conftest import bearer
from tests.integration.test_api_validation import expect_error

Client = TestClient[Any, Any]

TASK_FIELDS = {
    "id", "type", "queue", "priority", "status", "payload", "labels", "attempts", "max_retries",
    "timeout", "run_at", "created_at", "started_at", "finished_at", "result", "error",
    "depends_on", "dag_id", "idempotency_key", "notify",
}  # fmt: skip
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def parse_time(value: str) -> datetime:
    assert RFC3339_UTC.fullmatch(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def count_rows(store: TaskStore) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM tasks"))


async def submit(api: Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    resp = await api.post("/v1/tasks", json=body, headers={**bearer(), **headers})
    assert resp.status == 201, await resp.text()
    task: dict[str, Any] = await resp.json()
    return task


# --- the representation ---------------------------------------------------------------------------


async def test_201_has_every_field_with_the_defaults(api: Client) -> None:
    before = datetime.now(UTC).timestamp()
    resp = await api.post("/v1/tasks", json={"type": "email.send"}, headers=bearer())
    after = datetime.now(UTC).timestamp()
    assert resp.status == 201, await resp.text()
    assert resp.content_type == "application/json"
    assert "Idempotent-Replayed" not in resp.headers
    task = await resp.json()
    assert set(task) == TASK_FIELDS
    assert uuid.UUID(task["id"]).version == 7
    assert {k: v for k, v in task.items() if k not in ("id", "run_at", "created_at")} == {
        "type": "email.send",
        "queue": "default",
        "priority": 0,
        "status": "PENDING",
        "payload": {},
        "labels": {},
        "attempts": 0,
        "max_retries": 3,
        "timeout": 300,
        "started_at": None,
        "finished_at": None,
        "result": None,
        "error": None,
        "depends_on": [],
        "dag_id": None,
        "idempotency_key": None,
        "notify": None,
    }
    created = parse_time(task["created_at"]).timestamp()
    assert before - 1 <= created <= after + 1
    assert abs(parse_time(task["run_at"]).timestamp() - created) < 1  # due now


async def test_get_adds_attempt_history_and_list_does_not(api: Client) -> None:
    task = await submit(api, {"type": "a", "payload": {"n": 1}})
    resp = await api.get(f"/v1/tasks/{task['id']}", headers=bearer())
    assert resp.status == 200
    got = await resp.json()
    assert set(got) == TASK_FIELDS | {"attempt_history"}
    assert got.pop("attempt_history") == []
    assert got == task
    listed = (await (await api.get("/v1/tasks", headers=bearer())).json())["items"]
    assert listed == [task]


async def test_every_submission_field_is_honoured(
    api: Client, queue: RedisQueue, queue_name: str
) -> None:
    notify = {
        "on": ["FAILED"],
        "email": ["ops@example.com"],
        "webhook": "https://hooks.example.com/t",
    }
    body = {
        "type": "report:build.v2",
        "payload": {"to": "a@b.io", "n": [1, 2]},
        "queue": queue_name,
        "priority": -7,
        "delay": 120,
        "max_retries": 0,
        "backoff": {"base": 1, "factor": 3, "max": 60, "jitter": "none"},
        "timeout": 12.5,
        "idempotency_key": "build-42",
        "notify": notify,
        "labels": {"team": "core", "env": "prod"},
    }
    task = await submit(api, body)
    expected = {k: v for k, v in body.items() if k not in ("delay", "backoff")}
    assert {k: task[k] for k in expected} == expected
    waited = parse_time(task["run_at"]) - parse_time(task["created_at"])
    assert 119 <= waited.total_seconds() <= 121
    depth = await queue.depth(queue_name)
    assert (depth.ready, depth.delayed) == (0, 1)


async def test_run_at_is_normalised_to_utc(api: Client, queue: RedisQueue, queue_name: str) -> None:
    task = await submit(
        api, {"type": "a", "queue": queue_name, "run_at": "2031-05-06T12:00:00+02:00"}
    )
    assert task["run_at"] == "2031-05-06T10:00:00.000Z"
    past = await submit(api, {"type": "a", "queue": queue_name, "run_at": "2001-01-01T00:00:00Z"})
    assert past["status"] == "PENDING"
    depth = await queue.depth(queue_name)
    assert (depth.ready, depth.delayed) == (1, 1)  # a time in the past is due now


async def test_notify_shows_its_defaults(api: Client) -> None:
    task = await submit(api, {"type": "a", "notify": {"email": ["ops@example.com"]}})
    assert task["notify"]["email"] == ["ops@example.com"]
    assert task["notify"]["on"] == ["SUCCESS", "FAILED"]
    assert task["notify"].get("webhook") is None


# --- idempotency ----------------------------------------------------------------------------------


async def test_same_key_same_body_replays_and_different_body_conflicts(
    api: Client, store: TaskStore
) -> None:
    body = {"type": "a", "payload": {"x": 1, "y": 2}, "idempotency_key": "order-1"}
    first = await submit(api, body)
    assert first["idempotency_key"] == "order-1"
    # The same body with its object keys in another order is the same request.
    again = {"idempotency_key": "order-1", "payload": {"y": 2, "x": 1}, "type": "a"}
    resp = await api.post("/v1/tasks", json=again, headers=bearer())
    assert resp.status == 200, await resp.text()
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert await resp.json() == first
    changed = {**body, "payload": {"x": 1, "y": 3}}
    resp = await api.post("/v1/tasks", json=changed, headers=bearer())
    err = await expect_error(resp, 409)
    assert "Idempotent-Replayed" not in resp.headers
    assert "idempotency" in err["code"]
    resp = await api.post("/v1/tasks", json={**body, "priority": 1}, headers=bearer())
    await expect_error(resp, 409)
    assert await count_rows(store) == 1


async def test_key_in_the_header(api: Client, store: TaskStore) -> None:
    body = {"type": "a", "payload": {"x": 1}}
    first = await submit(api, body, **{"Idempotency-Key": "hdr-1"})
    assert first["idempotency_key"] == "hdr-1"
    resp = await api.post("/v1/tasks", json=body, headers={**bearer(), "Idempotency-Key": "hdr-1"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert (await resp.json())["id"] == first["id"]
    # The header and the body field are one key: the same key in the body replays too.
    resp = await api.post("/v1/tasks", json={**body, "idempotency_key": "hdr-1"}, headers=bearer())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["id"] == first["id"]
    resp = await api.post(
        "/v1/tasks", json={"type": "b"}, headers={**bearer(), "Idempotency-Key": "hdr-1"}
    )
    await expect_error(resp, 409)
    assert await count_rows(store) == 1


async def test_keys_belong_to_a_tenant(api: Client, store: TaskStore) -> None:
    body = {"type": "a", "idempotency_key": "shared"}
    alice = await submit(api, body)
    resp = await api.post("/v1/tasks", json=body, headers=bearer("bob"))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["id"] != alice["id"]
    assert await count_rows(store) == 2


async def test_replay_answers_after_the_task_moved_on(api: Client, store: TaskStore) -> None:
    body = {"type": "a", "idempotency_key": "k"}
    first = await submit(api, body)
    await store.pool.execute(
        "UPDATE tasks SET status = 'SUCCESS', finished_at = now() WHERE id = $1",
        uuid.UUID(first["id"]),
    )
    resp = await api.post("/v1/tasks", json=body, headers=bearer())
    assert resp.status == 200
    replay = await resp.json()
    assert (replay["id"], replay["status"]) == (first["id"], "SUCCESS")


async def test_50_concurrent_submissions_with_one_key_make_one_task(
    api: Client, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    body = {"type": "a", "queue": queue_name, "payload": {"n": 1}, "idempotency_key": "burst"}
    responses = await asyncio.gather(
        *(api.post("/v1/tasks", json=body, headers=bearer()) for _ in range(50))
    )
    statuses = Counter(r.status for r in responses)
    assert statuses == {201: 1, 200: 49}, statuses
    ids = {(await r.json())["id"] for r in responses}
    assert len(ids) == 1
    for r in responses:
        assert r.headers.get("Idempotent-Replayed") == ("true" if r.status == 200 else None)
    assert await count_rows(store) == 1
    listed = await (await api.get("/v1/tasks", headers=bearer())).json()
    assert [t["id"] for t in listed["items"]] == list(ids)
    depth = await queue.depth(queue_name)
    assert (depth.ready, depth.delayed) == (1, 0)  # queued once


async def test_concurrent_submissions_with_one_key_and_two_bodies(
    api: Client, store: TaskStore
) -> None:
    bodies = [{"type": "a", "payload": {"v": i % 2}, "idempotency_key": "race"} for i in range(30)]
    responses = await asyncio.gather(
        *(api.post("/v1/tasks", json=b, headers=bearer()) for b in bodies)
    )
    [winner] = [i for i, r in enumerate(responses) if r.status == 201]
    winning_id = (await responses[winner].json())["id"]
    for body, resp in zip(bodies, responses, strict=True):
        if body == bodies[winner]:
            assert resp.status in (200, 201)
            assert (await resp.json())["id"] == winning_id
        else:
            await expect_error(resp, 409)
    assert await count_rows(store) == 1


# --- batches --------------------------------------------------------------------------------------


async def test_batch_creates_every_task_in_order(
    api: Client, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    tasks = [{"type": f"t.{i}", "queue": queue_name, "payload": {"i": i}} for i in range(5)]
    tasks.append({"type": "t.late", "queue": queue_name, "delay": 3600})
    resp = await api.post("/v1/tasks/batch", json={"tasks": tasks}, headers=bearer())
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert set(body) == {"items"}
    items = body["items"]
    assert [t["type"] for t in items] == [t["type"] for t in tasks]
    for item in items:
        assert set(item) == TASK_FIELDS
        assert item["status"] == "PENDING"
    assert len({t["id"] for t in items}) == 6
    assert await count_rows(store) == 6
    depth = await queue.depth(queue_name)
    assert (depth.ready, depth.delayed) == (5, 1)


async def test_batch_size_limits(api: Client, store: TaskStore) -> None:
    tasks = [{"type": "a"}] * 1001
    resp = await api.post("/v1/tasks/batch", json={"tasks": tasks}, headers=bearer())
    await expect_error(resp, 422, "validation_failed", ["tasks"])
    resp = await api.post("/v1/tasks/batch", json={"tasks": []}, headers=bearer())
    await expect_error(resp, 422, "validation_failed", ["tasks"])
    resp = await api.post("/v1/tasks/batch", json={}, headers=bearer())
    await expect_error(resp, 422, "validation_failed", ["tasks"])
    resp = await api.post("/v1/tasks/batch", json={"tasks": [], "x": 1}, headers=bearer())
    await expect_error(resp, 422, "validation_failed")
    assert await count_rows(store) == 0
    resp = await api.post("/v1/tasks/batch", json={"tasks": tasks[:1000]}, headers=bearer())
    assert resp.status == 201, await resp.text()
    assert len((await resp.json())["items"]) == 1000
    assert await count_rows(store) == 1000


async def test_batch_names_the_index_of_each_bad_item(api: Client, store: TaskStore) -> None:
    tasks: list[Any] = [
        {"type": "ok"},
        {"type": "ok", "priority": 500},
        {"type": "ok"},
        {"type": "not ok"},
        {"type": "ok", "payload": {"s": "\u0000"}, "delay": 1, "run_at": "2030-01-01T00:00:00Z"},
        {"type": "ok", "colour": "red"},
        "not an object",
        {"payload": {}},
    ]
    resp = await api.post("/v1/tasks/batch", json={"tasks": tasks}, headers=bearer())
    err = await expect_error(
        resp,
        422,
        "validation_failed",
        [
            "tasks[1].priority",
            "tasks[3].type",
            "tasks[4].payload",
            "tasks[4].delay",
            "tasks[5].colour",
            "tasks[6]",
            "tasks[7].type",
        ],
    )
    named = {d["field"] for d in err["details"]}
    assert not named & {"tasks[0]", "tasks[2]"}
    assert not any(f.startswith(("tasks[0]", "tasks[2]")) for f in named)
    assert await count_rows(store) == 0


async def test_batch_rejects_a_key_repeated_within_it(api: Client, store: TaskStore) -> None:
    tasks = [
        {"type": "a", "idempotency_key": "k1"},
        {"type": "b"},
        {"type": "c", "idempotency_key": "k1"},
    ]
    resp = await api.post("/v1/tasks/batch", json={"tasks": tasks}, headers=bearer())
    await expect_error(resp, 422, "validation_failed", ["tasks[2].idempotency_key"])
    assert await count_rows(store) == 0


async def test_batch_is_all_or_nothing_on_an_idempotency_conflict(
    api: Client, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    original = await submit(api, {"type": "a", "queue": queue_name, "idempotency_key": "dup"})
    tasks = [
        {"type": "new.one", "queue": queue_name},
        {"type": "new.two", "queue": queue_name, "idempotency_key": "fresh"},
        {"type": "a", "queue": queue_name, "idempotency_key": "dup", "payload": {"other": 1}},
        {"type": "new.three", "queue": queue_name},
    ]
    resp = await api.post("/v1/tasks/batch", json={"tasks": tasks}, headers=bearer())
    await expect_error(resp, 409, None, ["tasks[2].idempotency_key"])
    rows = await store.pool.fetch("SELECT id FROM tasks")
    assert [str(r["id"]) for r in rows] == [original["id"]]
    assert (await queue.depth(queue_name)).ready == 1
    # The key "fresh" was rolled back with the rest, so it is free to use.
    fresh = await submit(api, {"type": "x", "idempotency_key": "fresh"})
    assert fresh["type"] == "x"


async def test_batch_replays_items_already_stored_with_the_same_body(
    api: Client, store: TaskStore
) -> None:
    original = await submit(api, {"type": "a", "payload": {"p": 1}, "idempotency_key": "same"})
    tasks = [{"type": "b"}, {"type": "a", "payload": {"p": 1}, "idempotency_key": "same"}]
    resp = await api.post("/v1/tasks/batch", json={"tasks": tasks}, headers=bearer())
    assert resp.status == 201, await resp.text()
    items = (await resp.json())["items"]
    assert items[1]["id"] == original["id"]
    assert items[0]["id"] != original["id"]
    assert await count_rows(store) == 2


async def test_submissions_get_increasing_ids_and_times(api: Client) -> None:
    tasks = [await submit(api, {"type": "a"}) for _ in range(5)]
    ids = [uuid.UUID(t["id"]) for t in tasks]
    assert ids == sorted(ids)
    created = [parse_time(t["created_at"]) for t in tasks]
    assert created == sorted(created)
