"""The task store's insert paths: one task and many give the same rows, and every queue a task
is stored in is registered for the promoter (``known_queues``), whatever the path."""

from __future__ import annotations

import dataclasses

import asyncpg
import pytest

from taskd.store.tasks import NewTask, TaskStore
from tests.helpers import new_task


def keyed(task: NewTask, key: str) -> NewTask:
    return dataclasses.replace(task, idempotency_key=key, request_hash="h")


async def test_one_and_many_store_the_same_row(store: TaskStore, queue_name: str) -> None:
    one = keyed(new_task(queue_name, "t.same", payload={"a": 1}, priority=5), "k1")
    many = [
        keyed(new_task(queue_name, "t.same", payload={"a": 1}, priority=5), "k2"),
        new_task(queue_name, "t.other"),
    ]
    [single] = await store.insert([one])
    [first, _] = await store.insert(many)
    ignore = {"id", "idempotency_key", "created_at", "updated_at", "run_at", "delay_ms"}
    assert {k: v for k, v in single.items() if k not in ignore} == {
        k: v for k, v in first.items() if k not in ignore
    }
    assert single["status"] == "PENDING" and single["delay_ms"] <= 0
    # A taken key is left out on both paths.
    assert await store.insert([one]) == []
    assert len(await store.insert([many[0], new_task(queue_name, "t.new")])) == 1


async def test_a_new_queue_is_registered_once(store: TaskStore, queue_name: str) -> None:
    await store.insert([new_task(queue_name, "t.x")])
    assert queue_name in await store.known_queues()
    # Registered by this store: the next insert in that queue does not write it again.
    await store.pool.execute("DELETE FROM queues WHERE name = $1", queue_name)
    await store.insert([new_task(queue_name, "t.x")])
    assert queue_name not in await store.known_queues()
    # Another process (a new store) registers it again.
    await TaskStore(store.pool).insert([new_task(queue_name, "t.x")])
    assert queue_name in await store.known_queues()


async def test_a_queue_registered_in_a_rolled_back_transaction_is_registered_again(
    store: TaskStore, queue_name: str
) -> None:
    with pytest.raises(asyncpg.RaiseError):
        async with store.pool.acquire() as conn, conn.transaction():
            await store.insert([new_task(queue_name, "t.x")], conn)
            await conn.execute("DO $$ BEGIN RAISE 'roll back'; END $$")
    assert queue_name not in await store.known_queues()
    await store.insert([new_task(queue_name, "t.x")])
    assert queue_name in await store.known_queues()
