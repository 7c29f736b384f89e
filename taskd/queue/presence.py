"""Worker presence and queue positions in Redis, for the dashboard and the explain route.

Each worker announces itself every few seconds (``announce.lua``): its queues, the task types it
serves, its slots and the tasks it holds, kept for a few announcement periods. A worker that
stops announcing drops out by itself; no one has to clean up after a crashed worker. Deadlines
come from Redis ``TIME``, never from a client clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis

from taskd.queue.client import _translated
from taskd.queue.keys import WORKER_INFO_PREFIX, WORKERS_LIVE, QueueKeys, worker_info
from taskd.queue.scripts import read_source

# Most workers a presence listing returns (a page of them is shown at a time).
MAX_LISTED = 10_000


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a live worker says about itself."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    types: tuple[str, ...]
    slots: int
    in_flight: int
    started_at: float  # epoch seconds
    tasks: tuple[str, ...] = ()  # ids of the tasks it holds (at most a few hundred)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a task is in its queue's Redis structures."""

    where: str | None  # "ready", "delayed", "active" or None (Redis does not track it)
    ahead: int = 0  # ready: tasks that run before it
    at_ms: int | None = None  # delayed: due time; active: lease deadline (epoch ms)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WorkerInfo)


class WorkerPresence:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._announce = client.register_script(read_source("announce"))
        self._workers = client.register_script(read_source("workers"))

    @_translated
    async def announce(self, info: WorkerInfo, ttl_ms: int) -> int:
        """Say ``info`` holds for ``ttl_ms``; returns how many workers are live."""
        keys = [WORKERS_LIVE, worker_info(info.id)]
        return int(await self._announce(keys=keys, args=[info.id, ttl_ms, _encoder.encode(info)]))

    @_translated
    async def retire(self, worker_id: str) -> None:
        """A worker that stops cleanly leaves at once instead of expiring."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrem(WORKERS_LIVE, worker_id)
            pipe.delete(worker_info(worker_id))
            await pipe.execute()

    @_translated
    async def live(self) -> list[WorkerInfo]:
        flat = await self._workers(keys=[WORKERS_LIVE], args=[WORKER_INFO_PREFIX, MAX_LISTED])
        out = []
        for i in range(0, len(flat), 2):
            try:
                out.append(_decoder.decode(flat[i + 1]))
            except msgspec.ValidationError:
                continue  # a worker of another version: not ours to show
        return sorted(out, key=lambda w: w.id)

    @_translated
    async def position(self, queue: str, task_id: str) -> Position:
        k = QueueKeys(queue)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zscore(k.ready, task_id)
            pipe.zrank(k.ready, task_id)
            pipe.zscore(k.delayed, task_id)
            pipe.zscore(k.active, task_id)
            ready, rank, delayed, active = await pipe.execute()
        if active is not None:
            return Position("active", at_ms=int(active))
        if ready is not None:
            return Position("ready", ahead=int(rank or 0))
        if delayed is not None:
            return Position("delayed", at_ms=int(delayed) // 1000)
        return Position(None)


def serving(workers: Sequence[WorkerInfo], queue: str, type_: str) -> list[WorkerInfo]:
    """The live workers that would run a task of ``type_`` on ``queue``."""
    return [w for w in workers if queue in w.queues and type_ in w.types]
