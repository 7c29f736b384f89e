"""The notification outbox (DESIGN §5, Notify): configured defaults as statement parameters,
and the notifier's claim, settle and wake-up (LISTEN) on ``sql/notifications.sql``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from taskd.errors import DatabaseUnavailable
from taskd.store.pool import CONNECTION_ERRORS, translated
from taskd.store.queries import load

if TYPE_CHECKING:
    from taskd.config.settings import NotifyRule
    from taskd.store.tasks import Connection

SQL = load("notifications.sql")
# The channel the outbox trigger (migration 0005) notifies on every insert.
WAKE_CHANNEL = "taskd_notify"


@dataclass(frozen=True, slots=True)
class NotifyDefaults:
    """Configured defaults flattened into the parallel arrays that the completion statements
    take: one entry per (status, type pattern, queue, channel, target). Empty by default, so a
    task without a notify spec costs the completion path nothing but an empty join."""

    statuses: list[str] = field(default_factory=list)
    type_patterns: list[str] = field(default_factory=list)  # SQL LIKE patterns
    queues: list[str | None] = field(default_factory=list)  # None: every queue
    channels: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)

    @property
    def columns(self) -> tuple[list[Any], ...]:
        return (self.statuses, self.type_patterns, self.queues, self.channels, self.targets)


def like_pattern(glob: str) -> str:
    """A type glob (``*`` = any run of characters) as a LIKE pattern, ``%``/``_`` taken
    literally (task types may contain ``_``)."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def defaults_from_rules(rules: Iterable[NotifyRule]) -> NotifyDefaults:
    out = NotifyDefaults()
    for rule in rules:
        targets = [("email", a) for a in rule.email]
        if rule.webhook:
            targets.append(("webhook", rule.webhook))
        queues: Sequence[str | None] = rule.queues or (None,)
        for status in rule.statuses:
            for pattern in rule.types:
                for queue in queues:
                    for channel, target in targets:
                        out.statuses.append(status)
                        out.type_patterns.append(like_pattern(pattern))
                        out.queues.append(queue)
                        out.channels.append(channel)
                        out.targets.append(target)
    return out


@dataclass(frozen=True, slots=True)
class Settled:
    """One delivery attempt's result: ``outcome`` is delivered, failed or abandoned."""

    outbox_id: int
    outcome: str
    detail: str | None
    content: str | None
    started_at: datetime


@dataclass
class NotifyClaim:
    """Rows locked in an open transaction; settle them before the block ends."""

    conn: Connection
    rows: list[asyncpg.Record]
    attempts: dict[str, list[asyncpg.Record]]

    async def settle(self, results: Sequence[Settled], base: float, top: float) -> None:
        await self.conn.execute(
            SQL["settle"],
            [r.outbox_id for r in results],
            [r.outcome for r in results],
            [r.detail for r in results],
            [r.content for r in results],
            [r.started_at for r in results],
            base,
            top,
        )


class NotifyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[NotifyClaim]:
        """Lock up to ``limit`` due rows until the block ends (then commit).

        The history of a task is read only for rows not rendered yet (their first attempt).
        """
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = list(await conn.fetch(SQL["claim"], limit))
                fresh = list({r["id"] for r in rows if r["n_content"] is None})
                attempts: dict[str, list[asyncpg.Record]] = {}
                if fresh:
                    for a in await conn.fetch(SQL["attempts_of"], fresh):
                        attempts.setdefault(str(a["task_id"]), []).append(a)
                yield NotifyClaim(conn, rows, attempts)
        except CONNECTION_ERRORS as e:
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: {e}") from e

    @translated
    async def backlog(self) -> int:
        return int(await self.pool.fetchval(SQL["backlog"]))

    @translated
    async def next_due(self) -> float | None:
        """Seconds until the earliest pending row is due (<= 0: now); None if none waits."""
        value = await self.pool.fetchval(SQL["next_due"])
        return None if value is None else float(value)

    @asynccontextmanager
    async def listening(
        self, on_wake: Callable[[], None], on_lost: Callable[[], None]
    ) -> AsyncIterator[None]:
        """Hold a connection that LISTENs for new rows; ``on_lost`` is called if it drops."""

        def wake(*_: object) -> None:
            on_wake()

        def lost(*_: object) -> None:
            on_lost()

        try:
            async with self.pool.acquire() as conn:
                conn.add_termination_listener(lost)
                await conn.add_listener(WAKE_CHANNEL, wake)
                try:
                    yield
                finally:
                    with contextlib.suppress(*CONNECTION_ERRORS):
                        await conn.remove_listener(WAKE_CHANNEL, wake)
                    conn.remove_termination_listener(lost)
        except CONNECTION_ERRORS as e:
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: {e}") from e
