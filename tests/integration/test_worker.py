from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import pytest

from taskd import NonRetryableError, TaskContext
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore
from tests.helpers import eventually, new_task, registry_of, running_worker, submit, wait_terminal


async def ok(ctx: TaskContext, payload: Any) -> Any:
    return {"echo": payload, "attempt": ctx.attempt}


async def test_task_runs_to_success(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    [tid] = await submit(store, queue, new_task(queue_name, "t.ok", payload={"x": 1}))
    async with running_worker(settings, store, queue, registry_of(t__ok=ok)):
        row = await wait_terminal(store, tid)
    assert row["status"] == "SUCCESS"
    assert row["result"] == {"echo": {"x": 1}, "attempt": 1}
    history = await store.attempts(uuid.UUID(tid))
    assert [(h["attempt"], h["outcome"]) for h in history] == [(1, "SUCCESS")]
    assert await queue.tracked(queue_name, tid) is None


async def test_retries_then_fails_then_dead(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    async def boom(ctx: TaskContext, payload: Any) -> None:
        raise RuntimeError(f"boom {ctx.attempt}")

    [tid] = await submit(store, queue, new_task(queue_name, "t.boom", max_retries=2))
    async with running_worker(settings, store, queue, registry_of(t__boom=boom)):
        row = await wait_terminal(store, tid)
    assert row["status"] == "FAILED"
    assert row["attempt"] == 3
    assert row["error"] == {"type": "RuntimeError", "message": "boom 3", "retryable": True}
    history = await store.attempts(uuid.UUID(tid))
    assert [h["outcome"] for h in history] == ["ERROR", "ERROR", "ERROR"]


async def test_non_retryable_and_unknown_type(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    async def refuse(ctx: TaskContext, payload: Any) -> None:
        raise NonRetryableError("no")

    a, b = await submit(
        store, queue, new_task(queue_name, "t.refuse"), new_task(queue_name, "t.nobody")
    )
    async with running_worker(settings, store, queue, registry_of(t__refuse=refuse)):
        ra = await wait_terminal(store, a)
        rb = await wait_terminal(store, b)
    assert (ra["status"], ra["attempt"], ra["error"]["retryable"]) == ("FAILED", 1, False)
    assert (rb["status"], rb["attempt"], rb["error"]["type"]) == ("FAILED", 1, "UnknownTaskType")


async def test_timeout_is_retried_then_recorded(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    async def slow(ctx: TaskContext, payload: Any) -> None:
        await asyncio.sleep(30)

    [tid] = await submit(store, queue, new_task(queue_name, "t.slow", timeout=0.1, max_retries=1))
    async with running_worker(settings, store, queue, registry_of(t__slow=slow)):
        row = await wait_terminal(store, tid)
    assert row["status"] == "FAILED"
    history = await store.attempts(uuid.UUID(tid))
    assert [h["outcome"] for h in history] == ["TIMEOUT", "TIMEOUT"]


async def test_any_json_result_is_recorded(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """Lists, strings, numbers and null as results and payloads, recorded in one batch."""
    values: list[Any] = [[1, 2], ["ab"], "text", 3.5, None, {"nested": [[]]}, [], True]

    async def echo(ctx: TaskContext, payload: Any) -> Any:
        return payload["value"]

    tids = await submit(
        store, queue, *[new_task(queue_name, "t.echo", payload={"value": v}) for v in values]
    )
    async with running_worker(settings, store, queue, registry_of(t__echo=echo)):
        rows = [await wait_terminal(store, tid) for tid in tids]
    assert [r["status"] for r in rows] == ["SUCCESS"] * len(values)
    assert [r["result"] for r in rows] == values


async def test_an_unexpected_error_while_leasing_strands_no_slot(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A driver error the adapters do not translate (seen: asyncpg's protocol-state errors after
    pg_terminate_backend) must not kill a lease loop or leak the slots it had taken."""
    real_flip = store.flip_running
    failures = 0

    async def flaky_flip(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise RuntimeError("driver confused")
        return await real_flip(*args, **kwargs)

    monkeypatch.setattr(store, "flip_running", flaky_flip)
    tids = await submit(store, queue, *[new_task(queue_name, "t.ok") for _ in range(5)])
    async with running_worker(settings, store, queue, registry_of(t__ok=ok)) as worker:
        for tid in tids:
            assert (await wait_terminal(store, tid))["status"] == "SUCCESS"

        async def all_free() -> bool:
            return worker.slots.free == worker.slots.capacity

        await eventually(all_free)
    assert failures == 2
    attempts = await store.pool.fetchval("SELECT max(attempt) FROM tasks")
    assert attempts == 1  # the failed flips counted no attempt


async def test_a_heartbeat_racing_an_ack_leaves_no_lease_behind(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A heartbeat lists a running task; before its extend reaches Redis the task finishes and
    is acked. The extend then restores the lease as if Redis had lost it (found by the 1M
    benchmark: 400 finished tasks stayed in the active set); the worker takes it out again."""
    release = asyncio.Event()

    async def gated(ctx: TaskContext, payload: Any) -> int:
        await release.wait()
        return 1

    [tid] = await submit(store, queue, new_task(queue_name, "t.gated"))
    async with running_worker(settings, store, queue, registry_of(t__gated=gated)) as worker:

        async def running() -> bool:
            return tid in worker.held

        await eventually(running)
        real_extend = queue.extend

        async def extend_after_the_ack(name: str, pairs: Any, lease_ms: int) -> list[int]:
            release.set()  # the listed task finishes, is recorded and acked meanwhile

            async def acked() -> bool:
                return await queue.tracked(queue_name, tid) is None

            await eventually(acked)
            codes = await real_extend(name, pairs, lease_ms)
            assert codes == [2]  # restored: the race happened
            return codes

        monkeypatch.setattr(queue, "extend", extend_after_the_ack)
        await worker.heartbeat()
        assert await queue.tracked(queue_name, tid) is None
        assert await queue.held_leases(queue_name, [tid]) == [None]
    assert (await wait_terminal(store, tid))["status"] == "SUCCESS"


async def test_a_hand_off_with_no_free_slot_is_released_and_runs_later(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """One slot, two queues: the loops of the idle queue are registered for hand-offs while
    the other queue's task holds the only slot. The task handed to them must go back to the
    queue unstarted (not wait in an inbox, not be counted) and run once the slot is free."""
    from taskd.queue.keys import QueueKeys

    other = f"{queue_name}-busy"
    w = msgspec.structs.replace(settings.worker, queues=(queue_name, other), concurrency=1)
    release = asyncio.Event()

    async def hold(ctx: TaskContext, payload: Any) -> None:
        await release.wait()

    reg = registry_of(t__hold=hold, t__ok=ok)
    async with running_worker(msgspec.structs.replace(settings, worker=w), store, queue, reg):
        [busy] = await submit(store, queue, new_task(other, "t.hold"))
        await eventually(lambda: _status_is(store, busy, "RUNNING"))
        await eventually(lambda: _idle_waiters(queue, QueueKeys(queue_name).idle))
        [tid] = await submit(store, queue, new_task(queue_name, "t.ok"))
        await eventually(lambda: _tracked_as(queue, queue_name, tid, "ready"))
        assert (await store.get(uuid.UUID(tid), None))["attempt"] == 0
        release.set()
        row = await wait_terminal(store, tid)
    assert (row["status"], row["attempt"]) == ("SUCCESS", 1)


async def _status_is(store: TaskStore, tid: str, status: str) -> bool:
    row = await store.get(uuid.UUID(tid), None)
    return row is not None and row["status"] == status


async def _idle_waiters(queue: RedisQueue, key: str) -> bool:
    return bool(await queue.client.zcard(key) >= 1)


async def _tracked_as(queue: RedisQueue, name: str, tid: str, where: str) -> bool:
    return await queue.tracked(name, tid) == where
