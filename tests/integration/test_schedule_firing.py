"""The promoter's schedule firer against real Postgres and Redis: racing promoters, catch-up
after an outage, overlap, and fires starting on time at idle."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from taskd import TaskContext
from taskd.api.schedule_schemas import ScheduleSubmission, TaskTemplate
from taskd.api.schedules import ScheduleService
from taskd.api.submit import SubmitService
from taskd.clock import FakeClock, SystemClock
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.schedule.policy import Timeliness
from taskd.services.loop import run_forever
from taskd.services.schedules import ScheduleFirer
from taskd.store.dags import DagStore
from taskd.store.pool import create_pool
from taskd.store.schedules import ScheduleStore
from taskd.store.tasks import TaskStore
from tests.helpers import eventually, registry_of, running_worker, wait_terminal

T0 = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)  # half a minute before 12:01


def clock_at(t: datetime) -> FakeClock:
    return FakeClock(t.timestamp())


def at(clock: FakeClock, t: datetime) -> None:
    clock.advance(t.timestamp() - clock.now())


async def create(
    store: TaskStore,
    queue: RedisQueue,
    settings: Settings,
    clock: Any,
    queue_name: str,
    **fields: Any,
) -> asyncpg.Record:
    service = ScheduleService(ScheduleStore(store), SubmitService(store, queue, settings), clock)
    sub = ScheduleSubmission(
        name=fields.pop("name", f"s-{uuid.uuid4().hex[:8]}"),
        task=TaskTemplate(type="t.tick", queue=queue_name, payload={"n": 1}),
        **fields,
    )
    d, place = service.new(sub, "t")
    row = await service.store.create("t", d, place)
    assert row is not None
    return row


async def fires_of(store: TaskStore, schedule_id: uuid.UUID) -> list[tuple[datetime, str]]:
    rows = await store.pool.fetch(
        "SELECT instant, outcome FROM schedule_fires WHERE schedule_id = $1 ORDER BY instant",
        schedule_id,
    )
    return [(r["instant"], r["outcome"]) for r in rows]


async def tasks_of(store: TaskStore, schedule_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(
        await store.pool.fetch(
            "SELECT t.*, f.instant FROM schedule_fires f JOIN tasks t ON t.id = f.task_id "
            "WHERE f.schedule_id = $1 ORDER BY f.instant",
            schedule_id,
        )
    )


def minute(m: int) -> datetime:
    return datetime(2024, 5, 1, 12, m, tzinfo=UTC)


@contextlib.asynccontextmanager
async def pools(settings: Settings, n: int) -> AsyncIterator[list[TaskStore]]:
    made = [await create_pool(settings.database) for _ in range(n)]
    try:
        yield [TaskStore(p) for p in made]
    finally:
        for p in made:
            await p.close()


async def test_five_promoters_racing_fire_each_instant_exactly_once(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    clock = clock_at(T0)
    schedules = [
        await create(store, queue, settings, clock, queue_name, every=1.0, overlap="allow")
        for _ in range(4)
    ] + [
        await create(store, queue, settings, clock, queue_name, cron="*/2 * * * * *", catchup="all")
    ]
    async with pools(settings, 5) as stores:
        firers = [
            ScheduleFirer(ScheduleStore(s), queue, clock, Timeliness(lead=2, grace=1))
            for s in stores
        ]
        for step in range(40):
            # Mostly half-second ticks, with one stall that makes the instants late.
            clock.advance(0.5 if step != 20 else 6.0)
            await asyncio.gather(*(f.run_once() for f in firers))
    horizon = datetime.fromtimestamp(clock.now(), UTC) + timedelta(seconds=2)
    for row in schedules:
        fires = await fires_of(store, row["id"])
        instants = [i for i, _ in fires]
        assert len(instants) == len(set(instants))
        expected_step = timedelta(seconds=1 if row["every"] else 2)
        assert instants == [
            instants[0] + k * expected_step for k in range(len(instants))
        ]  # no instant skipped, none twice
        current = await ScheduleStore(store).get(row["id"], None)
        assert current is not None and current["next_fire_at"] == instants[-1] + expected_step
        if row["overlap"] == "allow":
            assert current["next_fire_at"] > horizon
        tasks = await tasks_of(store, row["id"])
        runs = [i for i, outcome in fires if outcome in ("enqueued", "caught_up")]
        assert [t["instant"] for t in tasks] == runs  # exactly one task per fire that ran
        keys = {t["idempotency_key"] for t in tasks}
        assert len(keys) == len(tasks)
        assert all(k.startswith(f"sched:{row['id']}:") for k in keys)
    total = await store.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE idempotency_key LIKE 'sched:%'"
    )
    assert total == await store.pool.fetchval(
        "SELECT count(*) FROM schedule_fires WHERE task_id IS NOT NULL"
    )


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [
        ("none", [*((m, "missed") for m in range(2, 11))]),
        ("latest", [*((m, "missed") for m in range(2, 10)), (10, "caught_up")]),
        (
            "all",
            [
                *((m, "missed") for m in range(2, 8)),
                *((m, "caught_up") for m in range(8, 11)),
            ],
        ),
    ],
)
async def test_a_stopped_promoter_applies_the_catch_up_policy_exactly(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    catchup: str,
    expected: list[tuple[int, str]],
) -> None:
    clock = clock_at(T0)
    row = await create(
        store,
        queue,
        settings,
        clock,
        queue_name,
        cron="* * * * *",
        catchup=catchup,
        max_catchup_runs=3,
        overlap="allow",
    )
    firer = ScheduleFirer(ScheduleStore(store), queue, clock, Timeliness(lead=5, grace=30))
    at(clock, minute(1) - timedelta(seconds=2))
    assert await firer.run_once() == {"enqueued": 1}  # 12:01, created ahead
    # The promoter is stopped for ten minutes, then comes back at 12:10:58.
    at(clock, minute(11) - timedelta(seconds=2))
    await firer.run_once()
    assert await fires_of(store, row["id"]) == [
        (minute(1), "enqueued"),
        *((minute(m), outcome) for m, outcome in expected),
        (minute(11), "enqueued"),
    ]
    ran = [minute(1), *(minute(m) for m, o in expected if o != "missed"), minute(11)]
    tasks = await tasks_of(store, row["id"])
    assert [t["instant"] for t in tasks] == ran
    assert all(t["run_at"] == t["instant"] for t in tasks)  # no jitter configured
    assert await firer.run_once() == {}  # nothing more until 12:12 comes within the lead
    current = await ScheduleStore(store).get(row["id"], None)
    assert current is not None and current["next_fire_at"] == minute(12)


async def test_a_restarted_promoter_resumes_where_the_last_fire_left_off(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """A new firer (another process) decides from the stored state: no instant twice."""
    clock = clock_at(T0)
    row = await create(
        store, queue, settings, clock, queue_name, every=20.0, catchup="all", overlap="allow"
    )
    t = Timeliness(lead=5, grace=30)
    await ScheduleFirer(ScheduleStore(store), queue, clock, t).run_once()
    clock.advance(100)
    await ScheduleFirer(ScheduleStore(store), queue, clock, t).run_once()
    clock.advance(1)
    await ScheduleFirer(ScheduleStore(store), queue, clock, t).run_once()
    instants = [i for i, _ in await fires_of(store, row["id"])]
    assert instants == [row["anchor"] + timedelta(seconds=20 * k) for k in range(1, 6)]


async def test_overlap_skip_while_the_previous_run_is_still_running(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    clock = clock_at(T0)
    row = await create(store, queue, settings, clock, queue_name, cron="* * * * *")
    firer = ScheduleFirer(ScheduleStore(store), queue, clock, Timeliness(lead=5, grace=30))
    started, release = asyncio.Event(), asyncio.Event()

    async def tick(ctx: TaskContext, payload: Any) -> None:
        started.set()
        await release.wait()

    async with running_worker(settings, store, queue, registry_of(t__tick=tick)):
        at(clock, minute(1) - timedelta(seconds=3))
        await firer.run_once()
        await asyncio.wait_for(started.wait(), 10)  # 12:01's run is RUNNING
        at(clock, minute(2) - timedelta(seconds=3))
        assert await firer.run_once() == {}  # it might still end before 12:02: wait
        at(clock, minute(2) + timedelta(seconds=1))
        assert await firer.run_once() == {"skipped_overlap": 1}
        release.set()
        first = (await tasks_of(store, row["id"]))[0]
        assert (await wait_terminal(store, str(first["id"])))["status"] == "SUCCESS"
        at(clock, minute(3) - timedelta(seconds=3))
        assert await firer.run_once() == {"enqueued": 1}  # ahead again: nothing runs now
    assert await fires_of(store, row["id"]) == [
        (minute(1), "enqueued"),
        (minute(2), "skipped_overlap"),
        (minute(3), "enqueued"),
    ]


async def test_overlap_buffer_one_and_cancel_previous(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    """No worker runs here, so every run stays PENDING: live for the overlap policies."""
    clock = clock_at(T0)
    buffered = await create(
        store, queue, settings, clock, queue_name, cron="* * * * *", overlap="buffer_one"
    )
    cancelling = await create(
        store, queue, settings, clock, queue_name, cron="* * * * *", overlap="cancel_previous"
    )
    firer = ScheduleFirer(ScheduleStore(store), queue, clock, Timeliness(lead=5, grace=30))
    for m in (1, 2, 3):
        at(clock, minute(m) + timedelta(seconds=1))
        await firer.run_once()
    # buffer_one: 12:02 is held while 12:01's run is live, 12:03 is skipped.
    assert await fires_of(store, buffered["id"]) == [
        (minute(1), "enqueued"),
        (minute(3), "skipped_overlap"),
    ]
    first = (await tasks_of(store, buffered["id"]))[0]
    assert await DagStore(store).cancel(first["id"], None) is not None  # the run ends
    await firer.run_once()
    assert (minute(2), "enqueued") in await fires_of(store, buffered["id"])
    runs = await tasks_of(store, buffered["id"])
    assert [r["instant"] for r in runs] == [minute(1), minute(2)]
    assert await queue.tracked(queue_name, str(runs[1]["id"])) is not None
    # cancel_previous: each run cancels the one before it.
    runs = await tasks_of(store, cancelling["id"])
    assert [(r["instant"], r["status"]) for r in runs] == [
        (minute(1), "CANCELLED"),
        (minute(2), "CANCELLED"),
        (minute(3), "PENDING"),
    ]
    assert await queue.tracked(queue_name, str(runs[0]["id"])) is None
    assert await queue.tracked(queue_name, str(runs[2]["id"])) is not None


async def test_fires_start_within_a_second_of_their_instant_at_idle(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    clock = SystemClock()
    row = await create(store, queue, settings, clock, queue_name, every=1.0, overlap="allow")
    firer = ScheduleFirer(ScheduleStore(store), queue, clock)
    done: list[str] = []

    async def tick(ctx: TaskContext, payload: Any) -> None:
        done.append(ctx.task_id)

    loop = asyncio.create_task(
        run_forever("schedules", firer.run_once, settings.promoter.interval_seconds)
    )
    try:
        async with running_worker(settings, store, queue, registry_of(t__tick=tick)):
            await eventually(lambda: _true(len(done) >= 4), timeout=15)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    tasks = [t for t in await tasks_of(store, row["id"]) if t["started_at"] is not None]
    assert len(tasks) >= 4
    for t in tasks:
        lag = (t["started_at"] - t["instant"]).total_seconds()
        assert -0.05 <= lag < 1.0, (t["instant"], t["started_at"])


async def _true(value: bool) -> bool:
    return value
