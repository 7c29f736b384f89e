"""The promoter's schedule firer (DESIGN §5, Promoter loops): materialise due schedule fires.

Safe on every promoter replica at once, with no leader: a pass lists due schedules, then claims
each with ``FOR UPDATE SKIP LOCKED`` in its own transaction, so exactly one promoter decides a
schedule's instants at a time and the others move on. In that transaction it records each fire
(unique per schedule and instant: a second writer of the same instant records nothing), inserts
the fire's task (idempotency key ``sched:<id>:<instant>``) and advances the schedule; the tasks
are queued in Redis after commit (reconcile repairs a crash in between). The decisions
themselves — catch-up, overlap, timeliness — are the pure taskd.schedule.policy.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from taskd import metrics
from taskd.clock import Clock, SystemClock
from taskd.errors import QueueUnavailable
from taskd.queue.client import RedisQueue, pending_entries
from taskd.schedule.policy import OUTCOMES, Action, Timeliness, decide, jitter_seconds
from taskd.store.schedules import (
    FireSpec,
    ScheduleStore,
    policy_of,
    timing_of,
)
from taskd.store.tasks import Connection
from taskd.types import TERMINAL, TaskStatus

log = logging.getLogger("taskd.schedules")


async def enqueue_rows(queue: RedisQueue, rows: Sequence[asyncpg.Record]) -> None:
    """Queue freshly inserted PENDING task rows; if Redis is down, reconcile queues them."""
    try:
        await queue.enqueue_grouped(pending_entries(rows))
    except QueueUnavailable as e:
        log.warning("schedule tasks stored while Redis is unreachable: %s", e)


@dataclass
class Outcome:
    """One schedule's pass: fires recorded by outcome, tasks to queue, tasks cancelled."""

    counts: Counter[str] = field(default_factory=Counter)
    tasks: list[asyncpg.Record] = field(default_factory=list)
    cancelled: list[asyncpg.Record] = field(default_factory=list)


@dataclass
class ScheduleFirer:
    store: ScheduleStore
    queue: RedisQueue
    clock: Clock = field(default_factory=SystemClock)
    timeliness: Timeliness = field(default_factory=Timeliness)
    batch: int = 100
    # How long a cancel marker waits for the worker of a running previous run (overlap
    # cancel_previous), as the API's cancel: four lease periods.
    cancel_marker_ms: int = 120_000

    def __post_init__(self) -> None:
        for outcome in OUTCOMES:  # every series exported from the start, at 0
            metrics.SCHEDULE_FIRES.labels(outcome)

    async def run_once(self) -> Counter[str]:
        """One pass over the due schedules; returns the fires recorded, by outcome."""
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        horizon = now + timedelta(seconds=self.timeliness.lead)
        total: Counter[str] = Counter()
        for sid in await self.store.due(horizon, self.batch):
            done = await self._fire(sid, now, horizon)
            total += done.counts
            await enqueue_rows(self.queue, done.tasks)
            for row in done.cancelled:
                try:
                    await self.queue.cancel(row["queue"], str(row["id"]), self.cancel_marker_ms)
                except QueueUnavailable as e:  # Postgres holds the request; the lease expires
                    log.warning("cancel of %s recorded, Redis unreachable: %s", row["id"], e)
        return total

    async def _fire(self, sid: uuid.UUID, now: datetime, horizon: datetime) -> Outcome:
        out = Outcome()
        async with self.store.transaction() as conn:
            row = await self.store.claim(conn, sid, horizon)
            if row is None:  # another promoter holds it, or fired it meanwhile
                return out
            status = await self.store.task_status(conn, row["last_task_id"])
            d = decide(
                timing_of(row),
                policy_of(row),
                row["next_fire_at"],
                previous_live=status is not None and TaskStatus(status) not in TERMINAL,
                buffered=row["buffered_at"],
                now=now,
                timeliness=self.timeliness,
            )
            specs = [self._spec(row, a) for a in d.actions]
            fired = await self.store.record_fires(conn, row, specs)
            task_of = {instant: task for instant, _, task in fired.fires}
            last_task = await self._cancel_previous(conn, row, d.actions, task_of, out)
            await self.store.advance(
                conn,
                sid,
                next_fire_at=d.next_instant,
                last_fire_at=max((a.instant for a in d.actions), default=None),
                buffered_at=d.buffered,
                last_task_id=last_task,
            )
        # A run cancelled in the pass that created it never reaches Redis.
        cancelled = {r["id"] for r in out.cancelled}
        created = {r["id"] for r in fired.tasks}
        out.tasks = [r for r in fired.tasks if r["id"] not in cancelled]
        out.cancelled = [r for r in out.cancelled if r["id"] not in created]
        for instant, outcome, task in fired.fires:
            out.counts[outcome] += 1
            metrics.SCHEDULE_FIRES.labels(outcome).inc()
            if task is not None:
                metrics.SCHEDULE_LAG.observe(max((now - instant).total_seconds(), 0.0))
        return out

    def _spec(self, row: asyncpg.Record, a: Action) -> FireSpec:
        delay = jitter_seconds(str(row["id"]), a.instant, row["jitter"]) if a.run else 0.0
        return FireSpec(a.instant, a.outcome, a.run, a.instant + timedelta(seconds=delay))

    async def _cancel_previous(
        self,
        conn: Connection,
        row: asyncpg.Record,
        actions: Sequence[Action],
        task_of: dict[datetime, uuid.UUID | None],
        out: Outcome,
    ) -> uuid.UUID | None:
        """Cancel the run before each ``cancel_previous`` action; returns the latest run's
        task (None when no new run was recorded)."""
        previous: uuid.UUID | None = row["last_task_id"]
        latest: uuid.UUID | None = None
        for a in actions:
            task = task_of.get(a.instant)
            if not a.run or task is None:
                continue
            if a.cancel_previous and previous is not None:
                cancelled = await self.store.cancel_task(conn, previous)
                if cancelled is not None:
                    out.cancelled.append(cancelled)
            previous = latest = task
        return latest
