"""Fencing, priority order, delay precision and backoff bounds through the real worker path."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import msgspec

from taskd import TaskContext
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.services.maintenance import Reaper
from taskd.services.recorder import Recorder
from taskd.store.tasks import AttemptOutcome, RunDefaults, TaskStore
from tests.helpers import eventually, new_task, registry_of, running_worker, submit, wait_terminal

DEFAULTS = RunDefaults([], [], [], 3, 300.0)


async def ok(ctx: TaskContext, payload: Any) -> int:
    return ctx.attempt


async def test_stale_worker_cannot_record_after_reclaim(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """A paused worker whose lease expired wakes up after another worker finished the task."""
    [tid] = await submit(store, queue, new_task(queue_name))
    leased = await queue.lease(queue_name, 1, "paused:1", 30)
    [stale] = await store.flip_running(leased.ids, leased.tokens, "paused", DEFAULTS)
    await eventually(Reaper(store, queue, 3).run_once)  # the lease expired while it was paused
    async with running_worker(settings, store, queue, registry_of(t__ok=ok)):
        row = await wait_terminal(store, tid)
    assert (row["status"], row["result"], row["attempt"]) == ("SUCCESS", 2, 2)

    settled: list[bool] = []
    recorder = Recorder(store, queue, on_settled=lambda t, ok: settled.append(ok))
    runner = asyncio.create_task(recorder.run())
    err = {"type": "RuntimeError", "message": "late", "retryable": False}
    recorder.submit(stale, AttemptOutcome(tid, 1, "FAILED", "ERROR", error=err))
    await asyncio.wait_for(recorder.drained(), 10)
    runner.cancel()
    assert settled == [False]
    row = await store.get(uuid.UUID(tid), None)
    assert (row["status"], row["result"], row["attempt"]) == ("SUCCESS", 2, 2)
    history = await store.attempts(uuid.UUID(tid))
    assert [(h["attempt"], h["outcome"]) for h in history] == [(1, "LOST"), (2, "SUCCESS")]


async def test_unknown_commit_outcome_is_retried_idempotently(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """The same fenced completion applied twice (a retry after a lost commit reply) is done once."""
    [tid] = await submit(store, queue, new_task(queue_name))
    leased = await queue.lease(queue_name, 1, "w:1", 60_000)
    [task] = await store.flip_running(leased.ids, leased.tokens, "w", DEFAULTS)
    outcome = AttemptOutcome(tid, 1, "SUCCESS", "SUCCESS", result=1)
    # Committed, but say the reply was lost:
    assert (await store.complete([outcome])).written == {(tid, 1)}
    settled: list[bool] = []
    recorder = Recorder(store, queue, on_settled=lambda t, ok: settled.append(ok))
    runner = asyncio.create_task(recorder.run())
    recorder.submit(task, outcome)
    await asyncio.wait_for(recorder.drained(), 10)
    runner.cancel()
    assert settled == [True]  # recognised as already recorded, and acked
    assert await queue.tracked(queue_name, tid) is None
    assert len(await store.attempts(uuid.UUID(tid))) == 1


async def test_completion_and_flips_use_the_primary_key(store: TaskStore) -> None:
    """shared/PERF.md item 1: the fenced updates must not be served by the partial index."""
    from taskd.store.tasks import Q

    # A 100,000-task table, mostly finished, a few running: the shape that misled the planner.
    await store.pool.execute(
        "INSERT INTO tasks (id, tenant, type, queue, status, run_at, attempt)"
        " SELECT gen_random_uuid(), 't', 'x', 'q',"
        "  CASE WHEN i % 1000 = 0 THEN 'RUNNING' ELSE 'SUCCESS' END, now(), 1"
        " FROM generate_series(1, 100000) AS i"
    )
    await store.pool.execute("ANALYZE tasks")
    plan = await store.pool.fetch(
        "EXPLAIN " + Q["complete"],
        [str(uuid.uuid4())] * 100,
        [1] * 100,
        ["SUCCESS"] * 100,
        [None] * 100,
        [None] * 100,
        [0.0] * 100,
        ["SUCCESS"] * 100,
        [None] * 100,  # log lines
        *([[]] * 5),  # no configured notification defaults
    )
    text = "\n".join(r[0] for r in plan)
    assert "tasks_pkey" in text and "tasks_live" not in text, text
    # The RUNNING flips, batch and single-row, the same way.
    defaults = (["x"], [3], [60.0], 3, 60.0)
    ids = [str(uuid.uuid4()) for _ in range(100)]
    for name, args in (
        ("flip_running", (ids, ["tok"] * 100, "w", *defaults)),
        ("flip_running_one", (ids[0], "tok", "w", *defaults)),
    ):
        plan = await store.pool.fetch("EXPLAIN " + Q[name], *args)
        text = "\n".join(r[0] for r in plan)
        assert "tasks_pkey" in text and "tasks_live" not in text, (name, text)


async def test_priority_order_with_one_slot(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    order: list[int] = []

    async def record(ctx: TaskContext, payload: Any) -> None:
        order.append(payload["n"])

    tasks = [
        new_task(queue_name, "t.rec", priority=p, payload={"n": n})
        for n, p in enumerate([0, 0, 5, -3, 5, 0])
    ]
    tids = await submit(store, queue, *tasks)
    w = msgspec.structs.replace(settings.worker, concurrency=1, lease_loops=1)
    s = msgspec.structs.replace(settings, worker=w)
    async with running_worker(s, store, queue, registry_of(t__rec=record)):
        for tid in tids:
            await wait_terminal(store, tid)
    assert order == [2, 4, 0, 1, 5, 3]


async def test_delayed_task_starts_on_time_at_idle(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    started: asyncio.Queue[float] = asyncio.Queue()

    async def stamp(ctx: TaskContext, payload: Any) -> None:
        started.put_nowait(time.time())

    async with running_worker(settings, store, queue, registry_of(t__stamp=stamp)):
        await asyncio.sleep(0.1)  # let the worker go idle (blocked on the wake list)
        lateness = []
        for delay in (0.3, 0.5):
            [tid] = await submit(store, queue, new_task(queue_name, "t.stamp", delay=delay))
            row = await store.get(uuid.UUID(tid), None)
            due = row["run_at"].timestamp()
            began = await asyncio.wait_for(started.get(), 5)
            assert began >= due - 0.005, "started before its due time"
            lateness.append(began - due)
    assert max(lateness) < 0.1, lateness


async def test_retries_follow_backoff_bounds(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    starts: list[float] = []

    async def failing(ctx: TaskContext, payload: Any) -> None:
        starts.append(time.monotonic())
        raise RuntimeError("again")

    backoff = {"base": 0.2, "factor": 2, "max": 0.5, "jitter": "none"}
    [tid] = await submit(store, queue, new_task(queue_name, "t.f", max_retries=3, backoff=backoff))
    async with running_worker(settings, store, queue, registry_of(t__f=failing)):
        row = await wait_terminal(store, tid)
    assert row["status"] == "FAILED" and row["attempt"] == 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, expected in zip(gaps, [0.2, 0.4, 0.5], strict=True):
        assert gap >= expected - 0.01, (gaps, expected)
        assert gap < expected + 0.5, (gaps, expected)


async def test_fence_holds_after_redis_lost_everything(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """Redis is flushed under a stalled worker; its task is rescued and run again. The stale
    worker's heartbeat and its retry write are both rejected: the fence lives in Postgres."""
    from taskd.clock import FakeClock
    from taskd.services.maintenance import Reconciler, Rescuer
    from tests.integration.test_promoter import forget_queue

    [tid] = await submit(store, queue, new_task(queue_name))
    leased = await queue.lease(queue_name, 1, "stale:1", 60_000)
    [stale] = await store.flip_running(leased.ids, leased.tokens, "stale", DEFAULTS)
    await forget_queue(queue, queue_name)
    rescuer = Rescuer(store, queue, lease_seconds=0, max_retries_default=3, clock=FakeClock())
    assert await rescuer.run_once() == 1
    await Reconciler(store, queue, grace_seconds=0).run_once()
    fresh = await queue.lease(queue_name, 1, "fresh:1", 60_000)
    [new] = await store.flip_running(fresh.ids, fresh.tokens, "fresh", DEFAULTS)
    assert new.attempt == 2
    assert await queue.extend(queue_name, [(tid, stale.lease_token)], 60_000) == [0]

    settled: list[bool] = []
    recorder = Recorder(store, queue, on_settled=lambda t, ok: settled.append(ok))
    runner = asyncio.create_task(recorder.run())
    err = {"type": "RuntimeError", "message": "late", "retryable": True}
    recorder.submit(stale, AttemptOutcome(tid, 1, "PENDING", "ERROR", error=err, delay=1.0))
    await asyncio.wait_for(recorder.drained(), 10)
    runner.cancel()
    assert settled == [False]
    row = await store.get(uuid.UUID(tid), None)
    assert (row["status"], row["attempt"], row["lease_token"]) == ("RUNNING", 2, new.lease_token)
    assert await queue.tracked(queue_name, tid) == "active"  # the new holder's lease is intact
