"""POST /v1/tasks under concurrency: coalesced inserts keep every request's own outcome.

Concurrent single submissions share multi-row INSERTs (taskd.api.coalesce). These tests send
bursts through the real API, Postgres and Redis and check that each request still gets exactly
the answer it would have got alone: idempotency replays and conflicts, a row the database
refuses, and keyed inserts that must not deadlock one another.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from taskd.api.submit import SubmitService
from taskd.config.settings import Settings
from taskd.ids import uuid7
from taskd.queue.client import RedisQueue
from taskd.store.tasks import Executor, NewTask, TaskStore
from tests.conftest import bearer
from tests.integration.test_api_submit import count_rows, submit

Client = TestClient[Any, Any]


@pytest.fixture
def insert_sizes(store: TaskStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows of every INSERT the API makes (proof that submissions coalesced)."""
    sizes: list[int] = []
    original = store.insert

    async def insert(tasks: Sequence[NewTask], conn: Executor | None = None) -> Any:
        sizes.append(len(tasks))
        return await original(tasks, conn)

    monkeypatch.setattr(store, "insert", insert)
    return sizes


async def post_all(api: Client, bodies: Sequence[dict[str, Any]]) -> list[tuple[int, Any]]:
    """POST every body at once; (status, JSON body) of each, in order."""

    async def one(body: dict[str, Any]) -> tuple[int, Any, str | None]:
        resp = await api.post("/v1/tasks", json=body, headers=bearer())
        return resp.status, await resp.json(), resp.headers.get("Idempotent-Replayed")

    results = await asyncio.gather(*(one(b) for b in bodies))
    for status, _, replayed in results:
        assert replayed == ("true" if status == 200 else None)
    return [(status, doc) for status, doc, _ in results]


Case = tuple[str | None, dict[str, Any]]  # (idempotency key, body)


def burst(queue_name: str) -> list[Case]:
    """200 submissions: 120 without a key, 80 over 19 keys, some with two bodies."""
    cases: list[Case] = []

    def add(key: str | None, payload: dict[str, Any]) -> None:
        body = {"type": "a", "queue": queue_name, "payload": payload}
        cases.append((key, body | ({"idempotency_key": key} if key else {})))

    for i in range(120):  # no key: each is a new task
        add(None, {"i": i})
    for k in range(10):  # one key and one body, sent four times: one 201, three replays
        for _ in range(4):
            add(f"same-{k}", {"k": k})
    for k in range(8):  # one key, two bodies: the first stored wins, the other body is a 409
        for v in (0, 1, 0, 1):
            add(f"race-{k}", {"k": k, "v": v})
    for v in (0, 1, 0, 1, 0, 1, 0, 1):  # a key stored before the burst: replay or conflict
        add("old", {} if v == 0 else {"other": True})
    random.Random(9).shuffle(cases)
    return cases


def check_key(key: str, answers: list[tuple[dict[str, Any], int, Any]], old: Any) -> None:
    """One 201 at most per key; the same body replays its task, another body is a 409."""
    statuses = Counter(status for _, status, _ in answers)
    if key == "old":
        assert statuses == {200: 4, 409: 4}, statuses
        winner = old
    else:
        assert statuses[201] == 1, (key, statuses)
        winner = next(doc for _, status, doc in answers if status == 201)
    for body, status, doc in answers:
        if body["payload"] == winner["payload"]:
            assert status in (200, 201) and doc["id"] == winner["id"], (key, status, doc)
        else:
            assert status == 409 and doc["error"]["code"] == "idempotency_conflict", doc


async def test_200_concurrent_submissions_each_land_once_with_their_own_status(
    api: Client, store: TaskStore, queue: RedisQueue, queue_name: str, insert_sizes: list[int]
) -> None:
    old = await submit(api, {"type": "a", "queue": queue_name, "idempotency_key": "old"})
    cases = burst(queue_name)
    results = await post_all(api, [body for _, body in cases])
    by_key: dict[str, list[tuple[dict[str, Any], int, Any]]] = defaultdict(list)
    plain_ids = set()
    for (key, body), (status, doc) in zip(cases, results, strict=True):
        if key is None:
            assert status == 201, doc
            plain_ids.add(doc["id"])
        else:
            by_key[key].append((body, status, doc))
    assert len(plain_ids) == 120
    for key, answers in by_key.items():
        check_key(key, answers, old)
    assert await count_rows(store) == 1 + 120 + 10 + 8
    depth = await queue.depth(queue_name)
    assert (depth.ready, depth.delayed) == (1 + 120 + 10 + 8, 0)  # each queued exactly once
    assert max(insert_sizes) > 1, insert_sizes  # the burst did share INSERTs


async def test_a_row_the_database_refuses_fails_only_its_own_request(
    api: Client, store: TaskStore, queue: RedisQueue, queue_name: str, insert_sizes: list[int]
) -> None:
    # A constraint only this test's database has: rows of type "poison" cannot be stored.
    await store.pool.execute(
        "ALTER TABLE tasks ADD CONSTRAINT test_no_poison CHECK (type <> 'poison')"
    )
    bodies = [
        {"type": "poison" if i % 25 == 0 else "a", "queue": queue_name, "payload": {"i": i}}
        for i in range(200)
    ]
    results = await post_all(api, bodies)
    for body, (status, doc) in zip(bodies, results, strict=True):
        if body["type"] == "poison":
            assert status == 500 and doc["error"]["code"] == "internal", doc
        else:
            assert status == 201, doc
            assert doc["payload"] == body["payload"]
    assert await count_rows(store) == 192
    stored = {r["i"] for r in await store.pool.fetch("SELECT (payload->>'i')::int AS i FROM tasks")}
    assert stored == {i for i in range(200) if i % 25}
    assert (await queue.depth(queue_name)).ready == 192
    # A poisoned multi-row INSERT was tried, failed whole, and was redone row by row.
    assert max(insert_sizes) > 1 and insert_sizes.count(1) >= 8, insert_sizes


def keyed(queue_name: str, key: str) -> NewTask:
    return NewTask(
        id=uuid7(),
        tenant="alice",
        type="a",
        queue=queue_name,
        priority=0,
        payload={"k": key},
        labels={},
        max_retries=None,
        timeout=None,
        backoff=None,
        run_at=None,
        delay=0.0,
        idempotency_key=key,
        request_hash=f"hash-{key}",
    )


async def test_keyed_inserts_in_opposite_orders_do_not_deadlock(
    store: TaskStore, queue: RedisQueue, queue_name: str, settings: Settings
) -> None:
    """Each multi-row INSERT locks its keys until it commits, and waits on keys that another
    uncommitted one holds: taken in opposite orders, two would deadlock (a 500 after Postgres'
    deadlock_timeout). Batches and coalesced single submissions write keys in one order."""
    service = SubmitService(store, queue, settings)
    # Open the pool's connections first, so that the writes below start together.
    await asyncio.gather(*(store.pool.execute("SELECT pg_sleep(0.05)") for _ in range(5)))
    keys = [f"k{i:04}" for i in range(1000)]
    orders = [keys, keys[::-1], random.Random(1).sample(keys, len(keys))]
    batches = [service.submit_batch([keyed(queue_name, k) for k in order]) for order in orders]
    singles = [service.submit_one(keyed(queue_name, k)) for k in keys[::-1]]
    async with asyncio.timeout(30):
        stored, replied = await asyncio.gather(asyncio.gather(*batches), asyncio.gather(*singles))
    ids: dict[str, set[str]] = defaultdict(set)
    for row in [r for rows in stored for r in rows] + [one.row for one in replied]:
        ids[row["idempotency_key"]].add(str(row["id"]))
    assert len(ids) == len(keys) and all(len(found) == 1 for found in ids.values())
    assert await count_rows(store) == len(keys)
    assert (await queue.depth(queue_name)).ready == len(keys)
