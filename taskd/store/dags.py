"""Task dependencies in Postgres: graphs, edges, release and failure cascade.

The pure decisions (validation, which nodes start, which are cut off) come from taskd.dag; this
module applies them. Release and cascade run inside the transaction that records the parent's
outcome, so a crash cannot leave a finished parent with children that never hear of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from taskd.store.pool import translated
from taskd.store.queries import load
from taskd.store.tasks import NewTask, TaskStore, cascade_failure, json_param, task_columns

if TYPE_CHECKING:
    from taskd.store.tasks import Connection

D = load("dags.sql")


@dataclass(frozen=True, slots=True)
class GraphTask:
    """A task to insert as part of a graph: its status and unmet count are already decided."""

    task: NewTask
    status: str
    unmet: int
    dag_key: str | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoredDag:
    dag: asyncpg.Record
    tasks: list[asyncpg.Record]
    edges: list[tuple[uuid.UUID, uuid.UUID]]


async def lock_parents(
    conn: Connection, ids: Sequence[uuid.UUID], tenant: str
) -> dict[uuid.UUID, asyncpg.Record]:
    rows = await conn.fetch(D["lock_parents"], list(ids), tenant)
    return {r["id"]: r for r in rows}


async def insert_graph(
    conn: Connection, items: Sequence[GraphTask], dag: tuple[uuid.UUID, str, str] | None
) -> list[asyncpg.Record]:
    """Insert a dag row (optional) and the tasks; returns the inserted rows (a task whose
    idempotency key is taken is left out, as with plain inserts)."""
    if dag is not None:
        await conn.execute(D["insert_dag"], *dag)
    t = [i.task for i in items]
    dag_id = dag[0] if dag else None
    rows = await conn.fetch(
        D["insert_graph_tasks"],
        *task_columns(t),  # the 15 columns of a plain insert, then the graph's own
        [i.status for i in items],
        [i.unmet for i in items],
        [dag_id] * len(items),
        [i.dag_key for i in items],
        [json_param(i.error) for i in items],
    )
    return list(rows)


async def insert_edges(conn: Connection, edges: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Edges (parent, child); also fills the children's depends_on and marks the parents."""
    if edges:
        await conn.execute(D["insert_edges"], [e[0] for e in edges], [e[1] for e in edges])


class DagStore:
    def __init__(self, tasks: TaskStore) -> None:
        self.tasks = tasks
        self.pool = tasks.pool

    @translated
    async def redrive(self, task_id: uuid.UUID, tenant: str | None) -> asyncpg.Record | None:
        """A terminal task back to work (see dags.sql, redrive); None if it is not terminal."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await conn.fetchrow(D["redrive"], task_id, tenant)

    @translated
    async def cancel(self, task_id: uuid.UUID, tenant: str | None) -> asyncpg.Record | None:
        """Cancel a live task (see dags.sql, cancel); None if it is terminal or unknown.

        A WAITING or PENDING task ends now and its descendants are cut off in the same
        transaction; a RUNNING one carries the request until its worker records CANCELLED.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(D["cancel"], task_id, tenant)
            if row is not None and row["was"] != "RUNNING":
                await cascade_failure(conn, [str(task_id)])
            return row

    @translated
    async def get(self, dag_id: uuid.UUID, tenant: str | None) -> StoredDag | None:
        dag = await self.pool.fetchrow(D["get_dag"], dag_id, tenant)
        if dag is None:
            return None
        tasks = await self.pool.fetch(D["dag_tasks"], dag_id)
        edges = await self.pool.fetch(D["dag_edges"], dag_id)
        return StoredDag(dag, list(tasks), [(e["parent"], e["child"]) for e in edges])
