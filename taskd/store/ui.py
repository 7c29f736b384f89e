"""What the dashboard and the explain route read, and the audit log: named queries of
``sql/ui.sql``. Every read is bounded (capped counts, windows, limits) so that pages stay fast
on tables of millions of rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from taskd.store.pool import translated
from taskd.store.queries import load
from taskd.store.tasks import ListFilter

Q = load("ui.sql")


@dataclass(frozen=True, slots=True)
class DlqGroup:
    """Dead letters of one type, error type and message pattern."""

    type: str
    error_type: str
    pattern: str
    count: int
    first_seen: Any
    last_seen: Any
    sample_id: uuid.UUID
    sample_message: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    tenant: str
    via: str  # "api" or "ui"
    action: str
    task_ids: Sequence[uuid.UUID]
    filter: dict[str, Any] | None = None


class UiStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @translated
    async def count_capped(self, f: ListFilter, cap: int) -> int:
        """Tasks matching ``f`` (its cursor and limit aside), counted up to ``cap``."""
        args = (f.tenant, f.status, f.type, f.queue, f.dag_id, f.labels or None)
        return int(
            await self.pool.fetchval(
                Q["count_tasks_capped"], *args, f.created_after, f.created_before, cap
            )
        )

    @translated
    async def find_by_key(self, key: str, tenant: str | None) -> list[uuid.UUID]:
        if tenant is not None:
            rows = await self.pool.fetch(Q["find_by_key_in_tenant"], key, tenant)
        else:
            rows = await self.pool.fetch(Q["find_by_key_any_tenant"], key)
        return [r["id"] for r in rows]

    @translated
    async def attempts(self, task_id: uuid.UUID) -> list[asyncpg.Record]:
        """Every column of the task's attempts (including the kept log lines, when any)."""
        return list(await self.pool.fetch(Q["task_attempts"], task_id))

    @translated
    async def parents(self, task_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q["parents"], task_id))

    @translated
    async def children(self, task_id: uuid.UUID, limit: int = 200) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q["children"], task_id, limit))

    @translated
    async def dlq_publish_state(self, task_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q["dlq_publish_state"], task_id))

    @translated
    async def notifications(self, task_id: uuid.UUID) -> list[asyncpg.Record] | None:
        """The task's notification deliveries; None where notifications are not installed."""
        try:
            return list(await self.pool.fetch(Q["notifications"], task_id))
        except asyncpg.UndefinedTableError:
            return None

    @translated
    async def dlq_groups(self, tenant: str | None, window: int, limit: int = 100) -> list[DlqGroup]:
        rows = await self.pool.fetch(Q["dlq_groups"], tenant, window, limit)
        return [DlqGroup(**dict(r)) for r in rows]

    @translated
    async def dlq_group_ids(
        self,
        tenant: str | None,
        group: tuple[str, str, str],
        limit: int,
        among: Sequence[uuid.UUID] | None = None,
    ) -> list[uuid.UUID]:
        """The FAILED tasks of ``group`` (type, error type, pattern), newest first."""
        ids = list(among) if among is not None else None
        rows = await self.pool.fetch(Q["dlq_group_ids"], tenant, *group, ids, limit)
        return [r["id"] for r in rows]

    @translated
    async def dlq_newest(self, tenant: str | None, limit: int) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q["dlq_newest"], tenant, limit))

    @translated
    async def failed_among(self, ids: Sequence[uuid.UUID], tenant: str | None) -> list[uuid.UUID]:
        return [r["id"] for r in await self.pool.fetch(Q["failed_among"], list(ids), tenant)]

    @translated
    async def dag_failed(self, dag_id: uuid.UUID) -> list[uuid.UUID]:
        return [r["id"] for r in await self.pool.fetch(Q["dag_failed"], dag_id)]

    @translated
    async def tenant_queue_counts(self, tenant: str) -> dict[str, dict[str, Any]]:
        """``{queue: {status: count, "delayed": n, "oldest_due": time | None}}``."""
        out: dict[str, dict[str, Any]] = {}
        for r in await self.pool.fetch(Q["tenant_queue_counts"], tenant):
            q = out.setdefault(r["queue"], {"oldest_due": None})
            q[r["status"]] = r["n"]
            if r["oldest_due"] is not None:
                q["oldest_due"] = r["oldest_due"]
        for r in await self.pool.fetch(Q["tenant_queue_delayed"], tenant):
            out.setdefault(r["queue"], {"oldest_due": None})["delayed"] = r["n"]
        return out

    @translated
    async def failed_by_queue(self) -> dict[str, int]:
        return {r["queue"]: r["n"] for r in await self.pool.fetch(Q["failed_by_queue"])}

    @translated
    async def recent_activity(self, seconds: float, tenant: str | None) -> tuple[int, int]:
        """(attempts lost to reclaimed leases, tasks dead-lettered) over the last ``seconds``."""
        row = await self.pool.fetchrow(Q["recent_activity"], seconds, tenant)
        assert row is not None
        return int(row["lost"]), int(row["dead"])

    @translated
    async def throughput(
        self, tenant: str | None, since: float
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """``{(queue, minute): (succeeded, failed)}`` of attempts ended since ``since``
        (epoch seconds); ``minute`` is the epoch second the minute starts at."""
        rows = await self.pool.fetch(Q["throughput"], tenant, since)
        return {(r["queue"], int(r["minute"])): (r["ok"], r["failed"]) for r in rows}

    @translated
    async def watch_tasks(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[Any, ...]]:
        """A version per watched task: it changes whenever the task does."""
        rows = await self.pool.fetch(Q["watch_tasks"], list(ids))
        return {r["id"]: (r["status"], r["attempt"], r["updated_at"]) for r in rows}

    @translated
    async def watch_dags(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[Any, ...]]:
        rows = await self.pool.fetch(Q["watch_dags"], list(ids))
        return {r["dag_id"]: (r["updated_at"], r["n"]) for r in rows}

    @translated
    async def audit(self, entry: AuditEntry, keep_ids: int = 1000) -> None:
        """Record an action; at most ``keep_ids`` task ids are kept, the count is exact."""
        e = entry
        await self.pool.execute(
            Q["audit_insert"],
            e.actor,
            e.tenant,
            e.via,
            e.action,
            e.filter,
            list(e.task_ids)[:keep_ids],
            len(e.task_ids),
        )

    @translated
    async def audit_of_task(self, task_id: uuid.UUID) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q["audit_of_task"], task_id))

    @translated
    async def audit_recent(self, tenant: str | None, limit: int = 50) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q["audit_recent"], tenant, limit))
