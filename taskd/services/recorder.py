"""Coalesce attempt outcomes into batched, fenced Postgres writes, then settle Redis.

Outcomes wait in memory while Postgres is unreachable and are retried with backoff; a write
whose commit outcome is unknown is retried as the same fenced statement, and when that changes
no row the recorded history tells whether it had landed (DESIGN §6).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from taskd import logs, metrics
from taskd.errors import DependencyUnavailable
from taskd.queue.client import RedisQueue, Requeue
from taskd.services.maintenance import enqueue_all
from taskd.store.tasks import AttemptOutcome, Requeueable, TaskStore
from taskd.types import LeasedTask, TaskStatus

log = logging.getLogger("taskd.worker")


@dataclass(frozen=True, slots=True)
class Pending:
    task: LeasedTask
    outcome: AttemptOutcome


class Recorder:
    def __init__(
        self,
        store: TaskStore,
        queue: RedisQueue,
        *,
        max_rows: int = 100,
        interval: float = 0.002,
        on_settled: Callable[[LeasedTask, bool], Awaitable[None] | None] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.max_rows = max_rows
        self.interval = interval
        self.on_settled = on_settled
        self._pending: list[Pending] = []
        self._more = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._outage_logged = False

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def submit(self, task: LeasedTask, outcome: AttemptOutcome) -> None:
        self._pending.append(Pending(task, outcome))
        self._idle.clear()
        self._more.set()

    async def drained(self) -> None:
        """Wait until every submitted outcome has been written (or dropped as stale)."""
        await self._idle.wait()

    async def run(self, flushers: int = 2) -> None:
        """Flush forever with ``flushers`` batches in flight: Postgres spends most of a flush
        on per-row index work, so two disjoint batches at once use both its cores."""
        await asyncio.gather(*(self._flusher() for _ in range(flushers)))

    async def _flusher(self) -> None:
        delay = 0.05
        while True:
            if not self._pending:
                if self._in_flight == 0:
                    self._idle.set()
                self._more.clear()
                await self._more.wait()
                continue
            if len(self._pending) < self.max_rows:
                await asyncio.sleep(self.interval)  # let concurrent completions join the batch
            batch = self._pending[: self.max_rows * 10]
            del self._pending[: len(batch)]  # claimed: the other flusher takes the next rows
            self._in_flight += 1
            try:
                await self._flush(batch)
            except Exception as e:
                self._pending[:0] = batch  # give them back, oldest first, and retry
                self._failed(e, len(batch))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            finally:
                self._in_flight -= 1
            if self._outage_logged:
                log.warning("recording outcomes again")
                self._outage_logged = False
            delay = 0.05

    def _failed(self, error: Exception, rows: int) -> None:
        if not isinstance(error, DependencyUnavailable):
            # Never let the recorder die: outcomes would pile up unrecorded for good.
            log.error("recording %d outcomes failed; retrying", rows, exc_info=error)
        elif not self._outage_logged:
            log.warning("cannot record outcomes, holding %d in memory: %s", self.backlog, error)
            self._outage_logged = True

    async def _flush(self, batch: list[Pending]) -> None:
        done = await self.store.complete([p.outcome for p in batch])
        written = done.written
        missing = [(p.task.id, p.task.attempt) for p in batch]
        missing = [key for key in missing if key not in written]
        if missing:
            # Either an earlier try committed (unknown outcome) or the lease was reclaimed.
            recorded = await self.store.recorded_outcomes(missing)
            for p in batch:
                key = (p.task.id, p.task.attempt)
                if key not in written and recorded.get(key) == p.outcome.outcome:
                    written.add(key)
        ok: list[Pending] = []
        stale: list[Pending] = []
        for p in batch:
            (ok if (p.task.id, p.task.attempt) in written else stale).append(p)
        for p in stale:
            t = p.task
            metrics.STALE_WRITES.inc()
            log.warning(
                "dropped the outcome of task %s attempt %d: its lease was reclaimed",
                t.id,
                t.attempt,
                extra=logs.task_fields(t.id, t.attempt, t.queue, t.type),
            )
        # Told before Redis is settled: a worker stops extending a lease before it is acked,
        # or its heartbeat could restore the lease just acked (as if Redis had lost it).
        if self.on_settled is not None:
            for p in batch:
                result = self.on_settled(p.task, (p.task.id, p.task.attempt) in written)
                if result is not None:
                    await result
        await self._settle_redis(ok, stale)
        if done.released:
            await self._enqueue_released(done.released)
        _count(ok)

    async def _enqueue_released(self, released: list[Requeueable]) -> None:
        """Children whose last parent just succeeded; if Redis is down, reconcile queues them."""
        try:
            await enqueue_all(self.queue, released)
        except DependencyUnavailable as e:
            log.warning("could not queue %d released tasks (reconcile will): %s", len(released), e)

    async def _settle_redis(self, ok: list[Pending], stale: list[Pending]) -> None:
        """Ack finished tasks and schedule retries. Best effort: Postgres already holds the
        truth, and a lease left behind expires and is reaped harmlessly."""
        acks: dict[str, list[tuple[str, str]]] = defaultdict(list)
        retries: dict[str, list[Requeue]] = defaultdict(list)
        for p in ok:
            t = p.task
            if p.outcome.status == TaskStatus.PENDING.value:
                delay_ms = int(p.outcome.delay * 1000)
                retries[t.queue].append(Requeue(t.id, t.lease_token, t.priority, delay_ms))
            else:
                acks[t.queue].append((t.id, t.lease_token))
        for p in stale:
            acks[p.task.queue].append((p.task.id, p.task.lease_token))
        try:
            for queue, held in acks.items():
                await self.queue.ack(queue, held)
            for queue, items in retries.items():
                await self.queue.retry(queue, items)
        except DependencyUnavailable as e:
            log.warning(
                "could not settle %d leases in Redis (reconcile will): %s", len(ok) + len(stale), e
            )


def _count(done: list[Pending]) -> None:
    """The outcome counters, one increment per (queue, type, status) of a flush: a locked
    prometheus_client increment per task cost 5 % of the worker's CPU."""
    for (queue, type_, status), n in Counter(
        (p.task.queue, p.task.type, p.outcome.status) for p in done
    ).items():
        series = metrics.task_series(queue, type_)
        if status == TaskStatus.SUCCESS.value:
            series.succeeded.inc(n)
        elif status == TaskStatus.FAILED.value:
            series.failed.inc(n)
        elif status == TaskStatus.CANCELLED.value:
            metrics.TASKS_CANCELLED.labels(queue, type_).inc(n)
        else:
            series.retried.inc(n)
