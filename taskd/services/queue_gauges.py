"""Export each queue's depth by state and oldest-ready age (DESIGN §5, Promoter loops).

The promoter exports these, not the workers: one reader per promoter instead of one per worker,
and the values do not depend on which queues a worker serves. Several promoters export the same
values, so dashboards and alerts aggregate them with ``max by (queue)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskd import metrics
from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore

STATES = ("ready", "delayed", "active")


@dataclass
class QueueGauges:
    """One pass reads every known queue's stats from Redis and sets the gauges."""

    store: TaskStore
    queue: RedisQueue

    async def run_once(self) -> int:
        """Returns how many queues were measured."""
        names = await self.store.known_queues()
        for name in names:
            s = await self.queue.stats(name)
            for state, value in zip(STATES, (s.ready, s.delayed, s.active), strict=True):
                metrics.QUEUE_DEPTH.labels(name, state).set(value)
            metrics.QUEUE_OLDEST_READY_AGE.labels(name).set(s.oldest_ready_age)
        return len(names)
