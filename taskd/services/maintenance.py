"""The promoter's duties (DESIGN §5, Promoter loops): reap, reconcile, rescue.

Each is a small service with a ``run_once()`` that does one bounded pass and returns counts, so
tests call it directly; the promoter role runs them in ``run_forever`` loops. Every step is safe
with two promoters running at once: Redis scripts are atomic, and every Postgres change is fenced
on the lease token (one per attempt), so the second promoter's update finds nothing to change.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg

from taskd import metrics
from taskd.clock import Clock, SystemClock
from taskd.queue.client import Enqueue, RedisQueue
from taskd.services.runner import error_doc
from taskd.store.tasks import Requeueable, TaskStore

log = logging.getLogger("taskd.promoter")

ZERO_ID = uuid.UUID(int=0)


async def enqueue_all(queue: RedisQueue, items: Iterable[Requeueable]) -> int:
    """Enqueue (if absent) grouped by queue; returns how many Redis did not have."""
    return await queue.enqueue_grouped(
        (r.queue, Enqueue(r.id, r.priority, r.delay_ms)) for r in items
    )


@dataclass
class Reaper:
    """Expired leases: record the LOST attempt and re-queue (or fail when the budget is spent)."""

    store: TaskStore
    queue: RedisQueue
    max_retries_default: int
    batch: int = 500

    async def run_once(self) -> int:
        reaped = 0
        for name in await self.store.known_queues():
            counter = metrics.LEASES_REAPED.labels(name)  # exported as 0 before the first reap
            leases = await self.queue.reap(name, self.batch)
            if not leases:
                continue
            reaped += len(leases)
            counter.inc(len(leases))
            doc = error_doc("LeaseExpired", "the worker's lease expired before it finished", True)
            rows = await self.store.lose_attempts(leases, doc, self.max_retries_default)
            await enqueue_all(self.queue, (r for r, status in rows if status == "PENDING"))
            log.info("reaped %d expired leases in queue %s", len(leases), name)
        return reaped


@dataclass
class Reconciler:
    """PENDING rows that Redis lacks (crash between commit and enqueue, Redis data loss)."""

    store: TaskStore
    queue: RedisQueue
    grace_seconds: float = 5.0
    batch: int = 500

    async def run_once(self) -> int:
        repaired, cursor = 0, ZERO_ID
        while True:
            page = await self.store.pending_page(self.grace_seconds, cursor, self.batch)
            if not page:
                break
            added = await enqueue_all(self.queue, page)
            repaired += added
            cursor = uuid.UUID(page[-1].id)
            if len(page) < self.batch:
                break
        if repaired:
            metrics.RECONCILED.inc(repaired)
            log.warning("reconcile re-queued %d PENDING tasks missing from Redis", repaired)
        return repaired


@dataclass
class Rescuer:
    """RUNNING rows whose lease is gone from Redis for longer than one lease period.

    Redis lost its data and the worker died too, so the Redis-side reaper cannot see them. A live
    worker restores its lease at its next heartbeat (a third of a lease period), so a lease still
    missing after a whole period belongs to a dead worker. The first sighting is remembered in
    memory; a restarted promoter merely starts the period again.
    """

    store: TaskStore
    queue: RedisQueue
    lease_seconds: float
    max_retries_default: int
    clock: Clock = field(default_factory=SystemClock)
    batch: int = 500

    def __post_init__(self) -> None:
        self._missing_since: dict[tuple[str, str], float] = {}

    async def run_once(self) -> int:
        now = self.clock.monotonic()
        seen: dict[tuple[str, str], float] = {}
        due: list[tuple[str, str]] = []
        cursor = ZERO_ID
        while True:
            rows = await self.store.running_page(self.lease_seconds, cursor, self.batch)
            if not rows:
                break
            for lease in await self._missing(rows):
                first = self._missing_since.get(lease, now)
                seen[lease] = first
                if now - first >= self.lease_seconds:
                    due.append(lease)
            cursor = rows[-1]["id"]
            if len(rows) < self.batch:
                break
        self._missing_since = {k: v for k, v in seen.items() if k not in set(due)}
        if not due:
            return 0
        doc = error_doc(
            "LeaseVanished", "the lease vanished from Redis and the worker is gone", True
        )
        result = await self.store.lose_attempts(due, doc, self.max_retries_default)
        await enqueue_all(self.queue, (r for r, status in result if status == "PENDING"))
        rescued = sum(1 for _, status in result if status in ("PENDING", "FAILED"))
        metrics.RESCUED.inc(len(due))
        log.warning("rescued %d RUNNING tasks whose lease vanished from Redis", len(due))
        return rescued

    async def _missing(self, rows: Sequence[asyncpg.Record]) -> list[tuple[str, str]]:
        by_queue: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for r in rows:
            by_queue[r["queue"]].append((str(r["id"]), r["lease_token"] or ""))
        missing = []
        for name, leases in by_queue.items():
            holders = await self.queue.held_leases(name, [i for i, _ in leases])
            missing += [
                lease for lease, holder in zip(leases, holders, strict=True) if holder is None
            ]
        return missing
