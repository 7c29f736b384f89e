"""The schedule repository: schedules, their fires, and the tasks fires create.

Every statement is a named query from ``sql/schedules.sql`` (tasks go through the task store's
``insert_tasks``). The promoter's firer and the API's trigger and backfill all record fires with
:func:`ScheduleStore.record_fires`, inside a transaction that holds the schedule row's lock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from taskd.ids import uuid7
from taskd.schedule.policy import Policy
from taskd.schedule.timing import Timing, build_timing
from taskd.store.pool import translated
from taskd.store.queries import load
from taskd.store.tasks import Connection, NewTask, TaskStore, cascade_failure

S = load("schedules.sql")
D = load("dags.sql")
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ScheduleDef:
    """What defines a schedule, validated by the caller (the API or the configuration)."""

    name: str
    cron: str | None
    every: float | None
    timezone: str
    task: dict[str, Any]
    overlap: str = "skip"
    catchup: str = "latest"
    catchup_window: float = 3600.0
    max_catchup_runs: int = 10
    jitter: float = 0.0
    start_at: datetime | None = None
    end_at: datetime | None = None
    paused: bool = False

    def columns(self) -> list[Any]:
        return [
            self.name,
            self.cron,
            self.every,
            self.timezone,
            self.task,
            self.overlap,
            self.catchup,
            self.catchup_window,
            self.max_catchup_runs,
            self.jitter,
            self.start_at,
            self.end_at,
            self.paused,
        ]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a schedule stands in time: its ``every`` anchor and first undecided instant."""

    anchor: datetime
    next_fire_at: datetime | None


@dataclass(frozen=True, slots=True)
class FireSpec:
    instant: datetime
    outcome: str
    run: bool
    run_at: datetime | None = None  # the task's due time (the instant plus jitter)


@dataclass(frozen=True, slots=True)
class Fired:
    """What :meth:`ScheduleStore.record_fires` recorded: ``(instant, outcome, task id)`` of each
    new fire (instants recorded before are left out), the task rows it inserted, and when each
    new fire was recorded (Postgres' clock, as ``GET …/fires`` shows it)."""

    fires: list[tuple[datetime, str, uuid.UUID | None]]
    tasks: list[asyncpg.Record]
    fired_at: dict[datetime, datetime]


def timing_of(row: asyncpg.Record) -> Timing:
    return build_timing(
        cron=row["cron"],
        every=row["every"],
        timezone=row["timezone"],
        anchor=row["anchor"],
        start_at=row["start_at"],
        end_at=row["end_at"],
    )


def policy_of(row: asyncpg.Record) -> Policy:
    return Policy(
        overlap=row["overlap"],
        catchup=row["catchup"],
        catchup_window=row["catchup_window"],
        max_catchup_runs=row["max_catchup_runs"],
        jitter=row["jitter"],
    )


def fire_key(schedule_id: uuid.UUID, instant: datetime) -> str:
    """The idempotency key of a fire's task: ``sched:<id>:<instant>``."""
    stamp = instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return f"sched:{schedule_id}:{stamp}"


def task_of_fire(
    schedule: asyncpg.Record, task_id: uuid.UUID, instant: datetime, run_at: datetime
) -> NewTask:
    """The task a fire creates, from the schedule's template."""
    t = schedule["task"]
    return NewTask(
        id=task_id,
        tenant=schedule["tenant"],
        type=t["type"],
        queue=t.get("queue", "default"),
        priority=t.get("priority", 0),
        # Encoded here: a JSON null payload must stay JSON null, not become SQL NULL.
        payload=msgspec.Raw(_encoder.encode(t.get("payload", {}))),
        labels=t.get("labels") or {},
        max_retries=t.get("max_retries"),
        timeout=t.get("timeout"),
        backoff=t.get("backoff") or None,
        run_at=run_at,
        delay=0.0,
        idempotency_key=fire_key(schedule["id"], instant),
        notify=t.get("notify") or None,
    )


class ScheduleStore:
    def __init__(self, tasks: TaskStore) -> None:
        self.tasks = tasks
        self.pool = tasks.pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.tasks.transaction() as conn:
            yield conn

    # --- definitions ------------------------------------------------------------------------

    @translated
    async def create(
        self, tenant: str, d: ScheduleDef, place: Placement, source: str = "api"
    ) -> asyncpg.Record | None:
        """None when the tenant already has a schedule by this name."""
        return await self.pool.fetchrow(
            S["insert_schedule"],
            uuid7(),
            tenant,
            *d.columns(),
            source,
            place.anchor,
            place.next_fire_at,
        )

    @translated
    async def get(self, schedule_id: uuid.UUID, tenant: str | None) -> asyncpg.Record | None:
        return await self.pool.fetchrow(S["get_schedule"], schedule_id, tenant)

    @translated
    async def page(
        self, tenant: str | None, name: str | None, before: uuid.UUID | None, limit: int
    ) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(S["list_schedules"], tenant, name, before, limit))

    @translated
    async def modify(
        self,
        schedule_id: uuid.UUID,
        tenant: str | None,
        change: Callable[[asyncpg.Record], tuple[ScheduleDef, Placement]],
    ) -> asyncpg.Record | None:
        """Rewrite a schedule under its row lock: ``change`` maps the current row to the new
        definition and placement (it may raise to leave everything as it was)."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(S["lock_schedule"], schedule_id, tenant)
            if row is None:
                return None
            d, place = change(row)
            return await conn.fetchrow(
                S["update_schedule"], schedule_id, *d.columns(), place.anchor, place.next_fire_at
            )

    @translated
    async def delete(self, schedule_id: uuid.UUID, tenant: str | None) -> bool:
        return await self.pool.fetchval(S["delete_schedule"], schedule_id, tenant) is not None

    @translated
    async def fires(
        self, schedule_id: uuid.UUID, before: datetime | None, limit: int
    ) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(S["list_fires"], schedule_id, before, limit))

    @translated
    async def declare(
        self,
        items: Sequence[tuple[str, ScheduleDef, Placement]],
    ) -> list[tuple[str, str]]:
        """Upsert configuration schedules ``(tenant, def, placement)`` by name and delete the
        configuration schedules no longer declared; returns the deleted (tenant, name) pairs."""
        async with self.transaction() as conn:
            for tenant, d, place in items:
                await conn.execute(
                    S["upsert_declared"],
                    uuid7(),
                    tenant,
                    *d.columns(),
                    place.anchor,
                    place.next_fire_at,
                )
            gone = await conn.fetch(
                S["delete_undeclared"], [i[0] for i in items], [i[1].name for i in items]
            )
        return [(r["tenant"], r["name"]) for r in gone]

    # --- firing -----------------------------------------------------------------------------

    @translated
    async def due(self, horizon: datetime, limit: int) -> list[uuid.UUID]:
        return [r["id"] for r in await self.pool.fetch(S["due_schedules"], horizon, limit)]

    async def claim(
        self, conn: Connection, schedule_id: uuid.UUID, horizon: datetime
    ) -> asyncpg.Record | None:
        """The schedule, locked, if it is still due and no other promoter holds it."""
        return await conn.fetchrow(S["claim_schedule"], schedule_id, horizon)

    async def lock(
        self, conn: Connection, schedule_id: uuid.UUID, tenant: str | None
    ) -> asyncpg.Record | None:
        return await conn.fetchrow(S["lock_schedule"], schedule_id, tenant)

    async def task_status(self, conn: Connection, task_id: uuid.UUID | None) -> str | None:
        if task_id is None:
            return None
        status: str | None = await conn.fetchval(S["task_status"], task_id)
        return status

    async def record_fires(
        self, conn: Connection, schedule: asyncpg.Record, fires: Sequence[FireSpec]
    ) -> Fired:
        """Record fires (instants recorded before are left out) and insert the tasks of the new
        ones that run; a task key already taken in the tenant makes the fire that task's."""
        sid = schedule["id"]
        ids = {f.instant: uuid7() for f in fires if f.run}
        new = await conn.fetch(
            S["insert_fires"],
            sid,
            [f.instant for f in fires],
            [f.outcome for f in fires],
            [ids.get(f.instant) for f in fires],
        )
        recorded = {r["instant"] for r in new}
        news = [
            task_of_fire(schedule, ids[f.instant], f.instant, f.run_at or f.instant)
            for f in fires
            if f.run and f.instant in recorded
        ]
        rows = await self.tasks.insert(news, conn) if news else []
        task_ids: dict[datetime, uuid.UUID | None] = {f.instant: ids.get(f.instant) for f in fires}
        inserted = {r["id"] for r in rows}
        for n, f in zip(news, [f for f in fires if f.run and f.instant in recorded], strict=True):
            if n.id not in inserted:
                assert n.idempotency_key is not None
                found = await self.tasks.find_idempotent(n.tenant, [n.idempotency_key], conn)
                task_ids[f.instant] = found[0]["id"] if found else None
                await conn.execute(S["point_fire"], sid, f.instant, task_ids[f.instant])
        out = [(f.instant, f.outcome, task_ids[f.instant]) for f in fires if f.instant in recorded]
        return Fired(out, rows, {r["instant"]: r["fired_at"] for r in new})

    async def advance(
        self,
        conn: Connection,
        schedule_id: uuid.UUID,
        *,
        next_fire_at: datetime | None,
        last_fire_at: datetime | None,
        buffered_at: datetime | None,
        last_task_id: uuid.UUID | None,
    ) -> None:
        await conn.execute(
            S["advance_schedule"],
            schedule_id,
            next_fire_at,
            last_fire_at,
            buffered_at,
            last_task_id,
        )

    async def recorded(
        self, conn: Connection, schedule_id: uuid.UUID, instants: Sequence[datetime]
    ) -> list[asyncpg.Record]:
        """The fires already recorded at these instants."""
        return list(await conn.fetch(S["recorded_fires"], schedule_id, list(instants)))

    async def set_last_task(
        self, conn: Connection, schedule_id: uuid.UUID, task_id: uuid.UUID
    ) -> None:
        await conn.execute(S["set_last_task"], schedule_id, task_id)

    async def cancel_task(self, conn: Connection, task_id: uuid.UUID) -> asyncpg.Record | None:
        """Cancel a live task as POST /v1/tasks/{id}/cancel does (dags.sql, cancel): WAITING
        and PENDING end now, with their dependents; RUNNING carries the request to its worker.
        Returns the task with ``was`` (its status before), or None if it had ended."""
        row = await conn.fetchrow(D["cancel"], task_id, None)
        if row is not None and row["was"] != "RUNNING":
            await cascade_failure(conn, [str(task_id)])
        return row
