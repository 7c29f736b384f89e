"""The dead-letter outbox: claim due rows, mark them published or failed (with backoff)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from taskd.errors import DatabaseUnavailable
from taskd.store.pool import CONNECTION_ERRORS, translated
from taskd.store.queries import load

if TYPE_CHECKING:
    from taskd.store.tasks import Connection

SQL = load("outbox.sql")


@dataclass
class Claim:
    """Rows claimed in an open transaction; the caller settles each before it ends."""

    conn: Connection
    rows: list[asyncpg.Record]
    attempts: dict[str, list[asyncpg.Record]]

    async def published(self, outbox_ids: Sequence[int]) -> None:
        await self.conn.execute(SQL["mark_published"], list(outbox_ids))

    async def failed(self, outbox_ids: Sequence[int], error: str, base: float, top: float) -> None:
        await self.conn.execute(SQL["mark_failed"], list(outbox_ids), error[:2000], base, top)


class OutboxStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[Claim]:
        """Lock up to ``limit`` due rows until the block ends (then commit)."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = list(await conn.fetch(SQL["claim_dead_letters"], limit))
                attempts: dict[str, list[asyncpg.Record]] = {}
                if rows:
                    for a in await conn.fetch(SQL["attempts_of"], [r["id"] for r in rows]):
                        attempts.setdefault(str(a["task_id"]), []).append(a)
                yield Claim(conn, rows, attempts)
        except CONNECTION_ERRORS as e:
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: {e}") from e

    @translated
    async def backlog(self) -> int:
        return int(await self.pool.fetchval(SQL["backlog"]))
