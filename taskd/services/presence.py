"""A worker announces itself in Redis so the dashboard and ``explain`` can tell which workers
are alive, what they serve and what they are running (see taskd.queue.presence)."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field

from taskd.errors import DependencyUnavailable
from taskd.queue.presence import WorkerInfo, WorkerPresence
from taskd.services.loop import run_forever
from taskd.services.worker import Worker

# An announcement lists at most this many held tasks; the Workers page pages through them.
MAX_LISTED_TASKS = 500


@dataclass
class PresenceAnnouncer:
    """Announces ``worker`` every ``interval`` seconds; it is gone after three missed ones."""

    worker: Worker
    presence: WorkerPresence
    interval: float = 5.0
    started_at: float = field(default_factory=time.time)

    def info(self) -> WorkerInfo:
        w = self.worker
        held = list(w.held)
        return WorkerInfo(
            id=w.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=tuple(w.settings.queues),
            types=tuple(w.registry.names()),
            slots=w.slots.capacity,
            in_flight=len(held),
            started_at=self.started_at,
            tasks=tuple(held[:MAX_LISTED_TASKS]),
        )

    async def run_once(self) -> int:
        """Returns how many workers are live."""
        return await self.presence.announce(self.info(), int(self.interval * 3000))

    async def run(self) -> None:
        """Announce until cancelled; then leave at once rather than expire."""
        try:
            await run_forever("worker presence", self.run_once, self.interval)
        finally:
            with contextlib.suppress(DependencyUnavailable):
                await self.presence.retire(self.worker.id)
