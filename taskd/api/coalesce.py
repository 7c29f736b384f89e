"""Coalesce concurrent calls into batches, with no artificial wait (shared/PERF.md, item 6).

One INSERT and one Redis script call per submitted task cost a commit and three round trips per
request; under concurrency the api spent its time on per-statement overhead. A coalescer lets
many concurrent callers share one flush instead:

- ``submit(item)`` queues the item and returns when *its* outcome is known;
- whenever a flusher is free, it takes everything queued (up to ``max_items``) and flushes it;
  items that arrive meanwhile queue for the next flush;
- at most ``max_in_flight`` flushes run at once, so a burst fills the next batch while the
  current one is written, and a lone call never waits for a timer: it is flushed at the next
  turn of the event loop.

The flush function returns one outcome per item, a result or an exception, so one item's
failure is only that item's caller's failure. An exception raised by the flush itself is every
caller's outcome (e.g. the database is down: nothing was written for anyone).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[T, R]):
    """Batches concurrent :meth:`submit` calls into calls of ``flush``.

    Args:
        flush: Writes a batch; returns one result or exception per item, in order.
        max_items: The most items one flush takes.
        max_in_flight: The most flushes running at once.
    """

    def __init__(self, flush: Flush[T, R], *, max_items: int = 500, max_in_flight: int = 2):
        self._flush = flush
        self._max_items = max_items
        self._max_in_flight = max_in_flight
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._flushers = 0
        self._waiting = 0
        # The event loop holds only weak references to tasks: keep the flushers alive.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Callers waiting for their outcome (queued, or in a flush)."""
        return self._waiting

    async def submit(self, item: T) -> R:
        """Queue ``item`` for the next flush and return its outcome (or raise it)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._flushers < self._max_in_flight:
            self._flushers += 1
            # An empty context: the flusher serves many requests, so it must not carry (and
            # log with) the request ids of whichever request happened to start it.
            task = asyncio.create_task(self._run(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._waiting += 1
        try:
            # Cancelling the caller cancels the future: a flush not yet started leaves it out.
            return await future
        finally:
            self._waiting -= 1

    async def _run(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    await self._flush_batch(batch)
        finally:
            # No await between the empty check and this: a submit() cannot fall in between.
            self._flushers -= 1

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while self._queue and len(batch) < self._max_items:
            entry = self._queue.popleft()
            if not entry[1].done():  # its caller gave up (cancelled) before it was written
                batch.append(entry)
        return batch

    async def _flush_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        outcomes: Sequence[R | BaseException]
        try:
            outcomes = await self._flush([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as e:
            outcomes = [e] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
