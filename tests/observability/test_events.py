"""Each documented metric moves when its event happens (README, Observability).

Metrics are process-global, so every test reads deltas on its own random queue's series.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from taskd import NonRetryableError, TaskContext
from taskd.clock import FakeClock
from taskd.config.settings import Settings
from taskd.dlq.base import DeadLetter
from taskd.errors import SinkUnavailable
from taskd.queue.client import RedisQueue
from taskd.services.dlq_publisher import DlqPublisher
from taskd.services.maintenance import Reaper, Reconciler, Rescuer
from taskd.services.queue_gauges import QueueGauges
from taskd.services.recorder import Recorder
from taskd.store.outbox import OutboxStore
from taskd.store.tasks import AttemptOutcome, RunDefaults, TaskStore
from tests.conftest import bearer
from tests.helpers import eventually, new_task, registry_of, running_worker, submit, wait_terminal
from tests.integration.test_promoter import forget_queue
from tests.observability.metricvalues import Delta, moved, value

DEFAULTS = RunDefaults([], [], [], 3, 60.0)


async def ok(ctx: TaskContext, payload: Any) -> str:
    return "done"


async def test_submit_and_http_request(api: TestClient[Any, Any], queue_name: str) -> None:
    t = {"queue": queue_name, "type": "t.ok"}
    d = Delta(
        ("taskd_tasks_submitted_total", t),
        ("taskd_http_requests_total", {"method": "POST", "route": "/v1/tasks", "status": "201"}),
        ("taskd_http_requests_total", {"method": "POST", "route": "/v1/tasks", "status": "422"}),
        ("taskd_http_request_seconds_count", {"method": "POST", "route": "/v1/tasks"}),
    )
    for _ in range(2):
        resp = await api.post(
            "/v1/tasks", json={"type": "t.ok", "queue": queue_name}, headers=bearer()
        )
        assert resp.status == 201, await resp.text()
    resp = await api.post("/v1/tasks", json={"type": "t.ok", "queue": "NO!"}, headers=bearer())
    assert resp.status == 422
    assert d("taskd_tasks_submitted_total", **t) == 2
    post = {"method": "POST", "route": "/v1/tasks"}
    assert d("taskd_http_requests_total", **post, status="201") == 2
    assert d("taskd_http_requests_total", **post, status="422") == 1
    assert d("taskd_http_request_seconds_count", **post) == 3


async def test_start_success_run_and_wait_time(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """The wait is due -> start: a task due 3 s before it was submitted waited >= 3 s, a task
    delayed by 0.3 s waited far less than its delay."""
    t = {"queue": queue_name, "type": "t.ok"}
    d = Delta(
        ("taskd_tasks_started_total", t),
        ("taskd_tasks_succeeded_total", t),
        ("taskd_task_run_seconds_count", t),
        ("taskd_task_wait_seconds_count", t),
        ("taskd_task_wait_seconds_sum", t),
    )
    overdue = dataclasses.replace(
        new_task(queue_name), run_at=datetime.now(UTC) - timedelta(seconds=3)
    )
    async with running_worker(settings, store, queue, registry_of(t__ok=ok)):
        [a] = await submit(store, queue, overdue)
        await wait_terminal(store, a)
        await moved(d, "taskd_task_wait_seconds_count", 1, **t)
        waited_overdue = d("taskd_task_wait_seconds_sum", **t)
        [b] = await submit(store, queue, new_task(queue_name, delay=0.3))
        await wait_terminal(store, b)
        await moved(d, "taskd_tasks_succeeded_total", 2, **t)
    assert d("taskd_tasks_started_total", **t) == 2
    assert d("taskd_task_run_seconds_count", **t) == 2
    assert d("taskd_task_wait_seconds_count", **t) == 2
    assert 3 <= waited_overdue < 13
    assert d("taskd_task_wait_seconds_sum", **t) - waited_overdue < 0.3


async def test_failure_and_retry(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    async def refuse(ctx: TaskContext, payload: Any) -> None:
        raise NonRetryableError("no")

    async def flaky(ctx: TaskContext, payload: Any) -> str:
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return "ok"

    f = {"queue": queue_name, "type": "t.refuse"}
    r = {"queue": queue_name, "type": "t.flaky"}
    d = Delta(
        ("taskd_tasks_failed_total", f),
        ("taskd_tasks_retried_total", r),
        ("taskd_tasks_succeeded_total", r),
        ("taskd_tasks_started_total", r),
    )
    a, b = await submit(
        store, queue, new_task(queue_name, "t.refuse"), new_task(queue_name, "t.flaky")
    )
    async with running_worker(
        settings, store, queue, registry_of(t__refuse=refuse, t__flaky=flaky)
    ):
        await wait_terminal(store, a)
        await wait_terminal(store, b)
        await moved(d, "taskd_tasks_failed_total", 1, **f)
        await moved(d, "taskd_tasks_succeeded_total", 1, **r)
    assert d("taskd_tasks_retried_total", **r) == 2
    assert d("taskd_tasks_started_total", **r) == 3


async def test_in_flight_and_free_slots(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    release = asyncio.Event()

    async def block(ctx: TaskContext, payload: Any) -> str:
        await release.wait()
        return "released"

    in_flight = value("taskd_worker_in_flight")

    async def free_is(n: int) -> bool:
        # A lease loop holds the free slots while its lease call is in flight: poll.
        return value("taskd_worker_free_slots") == n

    async with running_worker(settings, store, queue, registry_of(t__block=block)) as worker:
        slots = worker.settings.concurrency
        assert value("taskd_worker_slots") == slots
        await eventually(lambda: free_is(slots))
        tids = await submit(store, queue, *[new_task(queue_name, "t.block") for _ in range(3)])

        async def all_running() -> bool:
            return value("taskd_worker_in_flight") == in_flight + 3

        await eventually(all_running)
        await eventually(lambda: free_is(slots - 3))
        release.set()
        for tid in tids:
            await wait_terminal(store, tid)

        async def all_done() -> bool:
            return value("taskd_worker_in_flight") == in_flight

        await eventually(all_done)
        await eventually(lambda: free_is(slots))


async def test_stale_write_rejected(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """A worker whose lease was reaped (and whose task ran elsewhere) cannot record."""
    [tid] = await submit(store, queue, new_task(queue_name))
    leased = await queue.lease(queue_name, 1, "paused:1", 30)
    [stale] = await store.flip_running(leased.ids, leased.tokens, "paused", DEFAULTS)
    d = Delta(
        ("taskd_stale_writes_rejected_total", {}),
        ("taskd_leases_reaped_total", {"queue": queue_name}),
    )
    await eventually(Reaper(store, queue, 3).run_once)
    assert d("taskd_leases_reaped_total", queue=queue_name) == 1
    async with running_worker(settings, store, queue, registry_of(t__ok=ok)):
        await wait_terminal(store, tid)
    recorder = Recorder(store, queue)
    runner = asyncio.create_task(recorder.run())
    err = {"type": "RuntimeError", "message": "late", "retryable": False}
    recorder.submit(stale, AttemptOutcome(tid, 1, "FAILED", "ERROR", error=err))
    await asyncio.wait_for(recorder.drained(), 10)
    runner.cancel()
    assert d("taskd_stale_writes_rejected_total") == 1


async def test_lease_reaped_is_exported_from_zero(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """The reaper exports each known queue's counter at 0, so rate() has data before a reap."""
    await submit(store, queue, new_task(queue_name, max_retries=1))
    assert await Reaper(store, queue, 3).run_once() == 0
    assert value("taskd_leases_reaped_total", queue=queue_name) == 0
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("taskd_leases_reaped_total", {"queue": queue_name}) == 0


async def test_reconcile_and_rescue(store: TaskStore, queue: RedisQueue, queue_name: str) -> None:
    d = Delta(("taskd_reconciled_total", {}), ("taskd_rescued_total", {}))
    await submit(store, queue, new_task(queue_name), new_task(queue_name), enqueue=False)
    assert await Reconciler(store, queue, grace_seconds=0).run_once() == 2
    assert d("taskd_reconciled_total") == 2

    leased = await queue.lease(queue_name, 2, "dead:1", 60_000)
    await store.flip_running(leased.ids, leased.tokens, "dead", DEFAULTS)
    await forget_queue(queue, queue_name)  # Redis lost everything, and the worker died
    rescuer = Rescuer(store, queue, lease_seconds=0, max_retries_default=3, clock=FakeClock())
    assert await rescuer.run_once() == 2
    assert d("taskd_rescued_total") == 2


async def test_queue_gauges(store: TaskStore, queue: RedisQueue, queue_name: str) -> None:
    """Depth by state and the oldest due task's age, as the promoter exports them."""
    overdue = dataclasses.replace(
        new_task(queue_name, priority=-5), run_at=datetime.now(UTC) - timedelta(seconds=30)
    )
    due_now = [new_task(queue_name, priority=p) for p in (0, 50, 50)]
    later = [new_task(queue_name, delay=600) for _ in range(2)]
    await submit(store, queue, overdue, *due_now, *later)
    leased = await queue.lease(queue_name, 1, "w:1", 60_000)  # takes the priority-50 one
    assert leased.ids
    gauges = QueueGauges(store, queue)
    assert await gauges.run_once() >= 1

    def depth(state: str) -> float:
        return value("taskd_queue_depth", queue=queue_name, state=state)

    assert (depth("ready"), depth("delayed"), depth("active")) == (3, 2, 1)
    age = value("taskd_queue_oldest_ready_age_seconds", queue=queue_name)
    assert 30 <= age < 40  # the overdue task, although it has the lowest priority

    # A due task still sitting in the delayed set (no worker has leased since) counts as ready.
    [soon] = await submit(store, queue, new_task(queue_name, delay=0.2))
    assert await queue.tracked(queue_name, soon) == "delayed"

    async def counted() -> bool:
        await gauges.run_once()
        return depth("ready") == 4

    await eventually(counted)
    assert depth("delayed") == 2
    await forget_queue(queue, queue_name)
    await gauges.run_once()
    assert (depth("ready"), depth("delayed"), depth("active")) == (0, 0, 0)
    assert value("taskd_queue_oldest_ready_age_seconds", queue=queue_name) == 0
    assert uuid.UUID(soon)


class FakeSink:
    """A dead-letter sink that is down until told otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.got: list[DeadLetter] = []

    async def start(self) -> None:
        pass

    async def publish(self, letters: list[DeadLetter]) -> None:
        if self.down:
            raise SinkUnavailable("the sink is down")
        self.got += letters

    async def close(self) -> None:
        pass


async def test_dead_letter_publishing(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    async def refuse(ctx: TaskContext, payload: Any) -> None:
        raise NonRetryableError("no")

    tids = await submit(store, queue, *[new_task(queue_name, "t.refuse") for _ in range(2)])
    async with running_worker(settings, store, queue, registry_of(t__refuse=refuse)):
        for tid in tids:
            await wait_terminal(store, tid)
    d = Delta(("taskd_dlq_publish_failures_total", {}), ("taskd_dlq_published_total", {}))
    sink = FakeSink()
    dlq = msgspec.structs.replace(settings.dlq, retry_base_seconds=0.01, retry_max_seconds=0.05)
    publisher = DlqPublisher(OutboxStore(store.pool), sink, dlq, settings.retry)
    with pytest.raises(SinkUnavailable):
        await publisher.run_once()
    assert d("taskd_dlq_publish_failures_total") == 1
    assert value("taskd_dlq_unpublished") == 2
    sink.down = False
    await eventually(publisher.run_once)  # the rows wait out their backoff first
    assert d("taskd_dlq_published_total") == 2
    assert value("taskd_dlq_unpublished") == 0
    assert sorted(letter.task_id for letter in sink.got) == sorted(tids)
