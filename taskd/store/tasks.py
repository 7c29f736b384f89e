"""The task repository: every statement is a named query from ``sql/tasks.sql``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import msgspec

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from taskd.errors import DatabaseUnavailable
from taskd.store.notifications import NotifyDefaults
from taskd.store.pool import CONNECTION_ERRORS, translated
from taskd.store.queries import load
from taskd.types import LeasedTask

Q = load("tasks.sql")
D = load("dags.sql")
_encoder = msgspec.json.Encoder()

Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Executor: TypeAlias = "asyncpg.Pool | Connection"


@dataclass(frozen=True, slots=True)
class NewTask:
    id: uuid.UUID
    tenant: str
    type: str
    queue: str
    priority: int
    payload: Any
    labels: dict[str, str]
    max_retries: int | None
    timeout: float | None
    backoff: dict[str, Any] | None
    run_at: datetime | None
    delay: float
    idempotency_key: str | None = None
    request_hash: str | None = None
    notify: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What a worker records when an attempt ends (status is the task's new status)."""

    id: str
    attempt: int
    status: str
    outcome: str
    result: Any = None
    error: dict[str, Any] | None = None
    delay: float = 0.0
    log: tuple[str, ...] = ()  # the last lines the handler kept with ctx.log


@dataclass(frozen=True, slots=True)
class RunDefaults:
    """Per-type handler defaults (parallel sequences) and the configured fallbacks."""

    types: Sequence[str]
    max_retries: Sequence[int | None]
    timeouts: Sequence[float | None]
    max_retries_default: int
    timeout_default: float


@dataclass(frozen=True, slots=True)
class Completed:
    written: set[tuple[str, int]]
    released: list[Requeueable]


@dataclass(frozen=True, slots=True)
class ListFilter:
    tenant: str | None
    status: str | None = None
    type: str | None = None
    queue: str | None = None
    dag_id: uuid.UUID | None = None
    labels: dict[str, str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    before_id: uuid.UUID | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Requeueable:
    id: str
    queue: str
    priority: int
    delay_ms: int


class TaskStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # Configured notification defaults, written with every SUCCESS/FAILED; replaced whole
        # (one reference) when the configuration changes.
        self.notify_defaults = NotifyDefaults()
        self._known_queues: set[str] = set()  # registered by this process (_register_queues)

    @translated
    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield conn
        except CONNECTION_ERRORS as e:
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: {e}") from e

    @translated
    async def insert(
        self, tasks: Sequence[NewTask], conn: Executor | None = None
    ) -> list[asyncpg.Record]:
        """Insert tasks; a task whose idempotency key is taken is silently left out."""
        await self._register_queues({t.queue for t in tasks}, conn)
        cols = task_columns(tasks)
        if len(tasks) == 1:
            return list(await (conn or self.pool).fetch(Q["insert_task"], *(c[0] for c in cols)))
        return list(await (conn or self.pool).fetch(Q["insert_tasks"], *cols))

    async def _register_queues(self, names: set[str], conn: Executor | None) -> None:
        """Record queues not seen before (``known_queues`` is what the promoter serves). The
        names are cached once committed: inside a caller's transaction, which may still roll
        back, they are registered every time."""
        new = names - self._known_queues
        if not new:
            return
        await (conn or self.pool).execute(Q["register_queues"], sorted(new))
        if conn is None:
            self._known_queues |= new

    @translated
    async def find_idempotent(
        self, tenant: str, keys: Sequence[str], conn: Executor | None = None
    ) -> list[asyncpg.Record]:
        return list(await (conn or self.pool).fetch(Q["find_idempotent"], tenant, list(keys)))

    @translated
    async def get(self, task_id: uuid.UUID, tenant: str | None) -> asyncpg.Record | None:
        return await self.pool.fetchrow(Q["get_task"], task_id, tenant)

    @translated
    async def attempts(self, task_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q["get_attempts"], task_id))

    @translated
    async def list_tasks(self, f: ListFilter) -> list[asyncpg.Record]:
        args = (f.tenant, f.status, f.type, f.queue, f.dag_id, f.labels or None)
        args2 = (f.created_after, f.created_before, f.before_id, f.limit)
        return list(await self.pool.fetch(Q["list_tasks"], *args, *args2))

    @translated
    async def flip_running(
        self, ids: Sequence[str], tokens: Sequence[str], worker: str, defaults: RunDefaults
    ) -> list[LeasedTask]:
        d = defaults
        per_type = (list(d.types), list(d.max_retries), list(d.timeouts))
        fallback = (d.max_retries_default, d.timeout_default)
        if len(ids) == 1:  # a hand-off: the single-row form is faster (see tasks.sql)
            one = (ids[0], tokens[0], worker, *per_type, *fallback)
            rows = await self.pool.fetch(Q["flip_running_one"], *one)
        else:
            many = (list(ids), list(tokens), worker, *per_type, *fallback)
            rows = await self.pool.fetch(Q["flip_running"], *many)
        return [_leased(r) for r in rows]

    @translated
    async def complete(self, outcomes: Sequence[AttemptOutcome]) -> Completed:
        """Record outcomes (fenced) and, in the same transaction, release or cut off the
        dependents of tasks that ended; returns what was written and the children released."""
        o = outcomes
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await self._complete(conn, o)
            succeeded = [
                str(r["id"]) for r in rows if r["has_children"] and r["status"] == "SUCCESS"
            ]
            ended = [
                str(r["id"])
                for r in rows
                if r["has_children"] and r["status"] in ("FAILED", "CANCELLED")
            ]
            released = await settle_dependents(conn, succeeded, ended)
        return Completed({(str(r["id"]), r["attempt"]) for r in rows}, released)

    async def _complete(
        self, conn: Connection, o: Sequence[AttemptOutcome]
    ) -> list[asyncpg.Record]:
        return await conn.fetch(
            Q["complete"],
            [x.id for x in o],
            [x.attempt for x in o],
            [x.status for x in o],
            [json_param(x.result) for x in o],
            [json_param(x.error) for x in o],
            [x.delay for x in o],
            [x.outcome for x in o],
            [json_param(x.log or None) for x in o],
            *self.notify_defaults.columns,
        )

    @translated
    async def parent_results(self, children: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{child id: {parent key (or id): result}}``."""
        rows = await self.pool.fetch(D["parent_results"], list(children))
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            out.setdefault(str(r["child"]), {})[r["dag_key"] or str(r["id"])] = r["result"]
        return out

    @translated
    async def recorded_outcomes(
        self, pairs: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], str]:
        rows = await self.pool.fetch(
            Q["recorded_outcomes"], [p[0] for p in pairs], [p[1] for p in pairs]
        )
        return {(str(r["id"]), r["attempt"]): r["outcome"] for r in rows}

    @translated
    async def lose_attempts(
        self, leases: Sequence[tuple[str, str]], error: dict[str, Any], max_retries_default: int
    ) -> list[tuple[Requeueable, str]]:
        """Record lost attempts for these (id, token) leases; returns what may be re-queued."""
        ids, tokens = [x[0] for x in leases], [x[1] for x in leases]
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                Q["lose_attempts"],
                ids,
                tokens,
                error,
                max_retries_default,
                *self.notify_defaults.columns,
            )
            failed = [str(r["id"]) for r in rows if r["status"] in ("FAILED", "CANCELLED")]
            if failed:  # ended for good: cut off the task's dependents too
                await cascade_failure(conn, failed)
        return [
            (Requeueable(str(r["id"]), r["queue"], r["priority"], r["delay_ms"]), r["status"])
            for r in rows
        ]

    @translated
    async def pending_page(self, grace_s: float, after: uuid.UUID, limit: int) -> list[Requeueable]:
        rows = await self.pool.fetch(Q["pending_page"], grace_s, after, limit)
        return [Requeueable(str(r["id"]), r["queue"], r["priority"], r["delay_ms"]) for r in rows]

    @translated
    async def running_page(
        self, older_than_s: float, after: uuid.UUID, limit: int
    ) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q["running_page"], older_than_s, after, limit))

    @translated
    async def known_queues(self) -> list[str]:
        return [r["name"] for r in await self.pool.fetch(Q["known_queues"])]


def json_param(value: Any) -> msgspec.Raw | None:
    """Pre-encode a value bound into a ``jsonb[]`` parameter.

    asyncpg would read a Python list inside an array parameter as one more array dimension
    (a handler returning ``[1, 2]`` broke the whole batched write); encoded JSON is opaque to it.
    """
    return None if value is None else msgspec.Raw(_encoder.encode(value))


def task_columns(tasks: Sequence[NewTask]) -> list[list[Any]]:
    t = tasks
    return [
        [x.id for x in t],
        [x.tenant for x in t],
        [x.type for x in t],
        [x.queue for x in t],
        [x.priority for x in t],
        [json_param(x.payload) for x in t],
        [json_param(x.labels) for x in t],
        [x.max_retries for x in t],
        [x.timeout for x in t],
        [json_param(x.backoff) for x in t],
        [x.run_at for x in t],
        [x.delay for x in t],
        [x.idempotency_key for x in t],
        [x.request_hash for x in t],
        [json_param(x.notify) for x in t],
    ]


def _leased(r: asyncpg.Record) -> LeasedTask:
    return LeasedTask(
        id=str(r["id"]),
        tenant=r["tenant"],
        queue=r["queue"],
        type=r["type"],
        priority=r["priority"],
        payload=r["payload"],
        attempt=r["attempt"],
        attempt_base=r["attempt_base"],
        max_retries=r["max_retries"],
        timeout=r["timeout"],
        backoff=r["backoff"],
        lease_token=r["lease_token"],
        waited=r.get("waited", 0.0),
        has_parents=r.get("has_parents", False),
    )


async def release_children(conn: Connection, parents: Sequence[str]) -> list[Requeueable]:
    rows = await conn.fetch(D["release_children"], list(parents))
    return [Requeueable(str(r["id"]), r["queue"], r["priority"], r["delay_ms"]) for r in rows]


async def cascade_failure(conn: Connection, parents: Sequence[str]) -> int:
    return len(await conn.fetch(D["cascade_failure"], list(parents)))


async def settle_dependents(
    conn: Connection, succeeded: Sequence[str], ended: Sequence[str]
) -> list[Requeueable]:
    """Release the children of ``succeeded``; cut off the descendants of ``ended`` (failed or
    cancelled). Returns the children that became PENDING, to enqueue after commit."""
    released = await release_children(conn, succeeded) if succeeded else []
    if ended:
        await cascade_failure(conn, ended)
    return released
