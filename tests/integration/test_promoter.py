"""The promoter's repairs against real Postgres and Redis (DESIGN §5, §6)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from taskd import TaskContext
from taskd.clock import FakeClock
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.queue.keys import QueueKeys
from taskd.services.maintenance import Reaper, Reconciler, Rescuer
from taskd.store.tasks import TaskStore
from tests.helpers import eventually, new_task, registry_of, running_worker, submit, wait_terminal


async def ok(ctx: TaskContext, payload: Any) -> str:
    return "done"


async def forget_queue(queue: RedisQueue, name: str) -> None:
    k = QueueKeys(name)
    await queue.client.delete(k.ready, k.delayed, k.active, k.idle)
    async for key in queue.client.scan_iter(match=f"{k.lease_prefix}*"):
        await queue.client.delete(key)


async def test_reconcile_repairs_crash_between_commit_and_enqueue(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    due, later = await submit(
        store, queue, new_task(queue_name), new_task(queue_name, delay=600), enqueue=False
    )
    assert await queue.tracked(queue_name, due) is None
    reconciler = Reconciler(store, queue, grace_seconds=0)
    assert await reconciler.run_once() == 2
    assert await queue.tracked(queue_name, due) == "ready"
    assert await queue.tracked(queue_name, later) == "delayed"
    assert await reconciler.run_once() == 0  # idempotent
    async with running_worker(settings, store, queue, registry_of(t__ok=ok)):
        assert (await wait_terminal(store, due))["status"] == "SUCCESS"


async def test_reconcile_leaves_recent_rows_to_the_api(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    await submit(store, queue, new_task(queue_name), enqueue=False)
    assert await Reconciler(store, queue, grace_seconds=60).run_once() == 0


async def test_reconcile_pages_through_many_rows(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    await submit(store, queue, *[new_task(queue_name) for _ in range(25)], enqueue=False)
    assert await Reconciler(store, queue, grace_seconds=0, batch=7).run_once() == 25
    assert (await queue.depth(queue_name)).ready == 25


async def test_reaper_records_lost_attempt_and_requeues(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    [tid] = await submit(store, queue, new_task(queue_name, max_retries=1))
    leased = await queue.lease(queue_name, 1, "dead-worker:1", 30)  # a worker that then died
    await store.flip_running(leased.ids, leased.tokens, "dead-worker", _defaults())
    reaper = Reaper(store, queue, max_retries_default=3)
    await eventually(reaper.run_once)
    row = await store.get(uuid.UUID(tid), None)
    assert (row["status"], row["attempt"]) == ("PENDING", 1)
    history = await store.attempts(uuid.UUID(tid))
    assert [(h["attempt"], h["outcome"], h["worker"]) for h in history] == [
        (1, "LOST", "dead-worker")
    ]
    assert await queue.tracked(queue_name, tid) == "ready"
    async with running_worker(settings, store, queue, registry_of(t__ok=ok)):
        row = await wait_terminal(store, tid)
    assert (row["status"], row["attempt"]) == ("SUCCESS", 2)


async def test_reaper_fails_task_whose_budget_is_spent(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    [tid] = await submit(store, queue, new_task(queue_name, max_retries=0))
    leased = await queue.lease(queue_name, 1, "dead:1", 30)
    await store.flip_running(leased.ids, leased.tokens, "dead", _defaults())
    await eventually(Reaper(store, queue, 3).run_once)
    row = await store.get(uuid.UUID(tid), None)
    assert row["status"] == "FAILED"
    assert row["error"]["type"] == "LeaseExpired"
    assert await queue.tracked(queue_name, tid) is None


async def test_reaper_requeues_leased_but_never_started(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    [tid] = await submit(store, queue, new_task(queue_name))
    await queue.lease(queue_name, 1, "died-before-flip:1", 30)
    await eventually(Reaper(store, queue, 3).run_once)
    row = await store.get(uuid.UUID(tid), None)
    assert (row["status"], row["attempt"]) == ("PENDING", 0)  # no attempt was counted
    assert await queue.tracked(queue_name, tid) == "ready"


async def test_rescue_reclaims_running_rows_after_redis_lost_everything(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    [tid] = await submit(store, queue, new_task(queue_name))
    leased = await queue.lease(queue_name, 1, "gone:1", 60_000)
    await store.flip_running(leased.ids, leased.tokens, "gone", _defaults())
    await forget_queue(queue, queue_name)  # Redis lost its data, then the worker died
    # lease_seconds=0: a lease missing at the first sighting is already overdue.
    rescuer = Rescuer(store, queue, lease_seconds=0, max_retries_default=3, clock=FakeClock())
    assert await rescuer.run_once() == 1
    row = await store.get(uuid.UUID(tid), None)
    assert (row["status"], row["attempt"]) == ("PENDING", 1)
    history = await store.attempts(uuid.UUID(tid))
    assert [h["outcome"] for h in history] == ["LOST"]
    assert await queue.tracked(queue_name, tid) == "ready"


async def test_rescue_waits_one_lease_period_before_reclaiming(
    store: TaskStore, queue: RedisQueue, queue_name: str, settings: Settings
) -> None:
    [tid] = await submit(store, queue, new_task(queue_name))
    leased = await queue.lease(queue_name, 1, "w:1", 60_000)
    await store.flip_running(leased.ids, leased.tokens, "w", _defaults())
    await store.pool.execute("UPDATE tasks SET updated_at = now() - interval '1 hour'")
    await forget_queue(queue, queue_name)
    clock = FakeClock()
    rescuer = Rescuer(store, queue, lease_seconds=30, max_retries_default=3, clock=clock)
    assert await rescuer.run_once() == 0  # first sighting: a live worker may still restore it
    clock.advance(29)
    assert await rescuer.run_once() == 0
    clock.advance(2)
    assert await rescuer.run_once() == 1
    assert (await store.get(uuid.UUID(tid), None))["status"] == "PENDING"


async def test_rescue_spares_a_lease_restored_by_a_live_worker(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    [tid] = await submit(store, queue, new_task(queue_name))
    leased = await queue.lease(queue_name, 1, "w:1", 60_000)
    await store.flip_running(leased.ids, leased.tokens, "w", _defaults())
    await store.pool.execute("UPDATE tasks SET updated_at = now() - interval '1 hour'")
    await forget_queue(queue, queue_name)
    clock = FakeClock()
    rescuer = Rescuer(store, queue, lease_seconds=30, max_retries_default=3, clock=clock)
    assert await rescuer.run_once() == 0
    assert await queue.extend(queue_name, [(tid, leased.tokens[0])], 60_000) == [2]  # heartbeat
    clock.advance(60)
    assert await rescuer.run_once() == 0
    assert (await store.get(uuid.UUID(tid), None))["status"] == "RUNNING"


async def test_two_promoters_do_not_double_count(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    tids = await submit(store, queue, *[new_task(queue_name) for _ in range(20)])
    leased = await queue.lease(queue_name, 20, "dead:1", 60_000)
    await store.flip_running(leased.ids, leased.tokens, "dead", _defaults())
    await forget_queue(queue, queue_name)
    a = Rescuer(store, queue, lease_seconds=0, max_retries_default=3, clock=FakeClock())
    b = Rescuer(store, queue, lease_seconds=0, max_retries_default=3, clock=FakeClock())
    await asyncio.gather(a.run_once(), b.run_once())
    rows = await store.pool.fetch("SELECT status, attempt FROM tasks")
    assert {(r["status"], r["attempt"]) for r in rows} == {("PENDING", 1)}
    lost = await store.pool.fetchval("SELECT count(*) FROM attempts WHERE outcome = 'LOST'")
    assert lost == len(tids)
    assert (await queue.depth(queue_name)).ready == 20


async def test_flushall_mid_run_loses_nothing(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """Redis loses everything while tasks are queued and running: all of them still finish."""
    release = asyncio.Event()

    async def gated(ctx: TaskContext, payload: Any) -> int:
        await release.wait()
        return ctx.attempt

    tids = await submit(store, queue, *[new_task(queue_name, "t.gated") for _ in range(30)])
    s = settings
    reconciler = Reconciler(store, queue, grace_seconds=0)
    rescuer = Rescuer(store, queue, lease_seconds=s.worker.lease_seconds, max_retries_default=3)
    async with running_worker(s, store, queue, registry_of(t__gated=gated)) as worker:

        async def all_running() -> bool:
            return len(worker.held) == len(tids)

        await eventually(all_running)
        await forget_queue(queue, queue_name)  # FLUSHALL, scoped to this test's queue
        await reconciler.run_once()
        await rescuer.run_once()
        await worker.heartbeat()  # the live worker restores its leases
        release.set()
        for tid in tids:
            row = await wait_terminal(store, tid, timeout=20)
            assert row["status"] == "SUCCESS"
    assert await rescuer.run_once() == 0
    multi = await store.pool.fetchval("SELECT count(*) FROM tasks WHERE attempt <> 1")
    assert multi == 0  # the running tasks' fenced writes landed; nothing ran twice


def _defaults() -> Any:
    from taskd.store.tasks import RunDefaults

    return RunDefaults([], [], [], 3, 300.0)
