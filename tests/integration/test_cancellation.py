"""A task cancelled during a Redis call stops (taskd.cancellation, CPython gh-86296)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine
from typing import Any

from taskd.errors import DependencyUnavailable
from taskd.queue.client import RedisQueue
from taskd.services.loop import run_forever


async def _cancelled_at_random(
    make_loop: Callable[[], Coroutine[Any, Any, None]], trials: int
) -> None:
    rng = random.Random(86296)
    for trial in range(trials):
        task = asyncio.create_task(make_loop())
        await asyncio.sleep(rng.random() * 0.003)  # the cancel lands anywhere in a call
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, f"trial {trial}: the cancel request was dropped and the loop runs on"
        assert task.cancelled()


async def test_a_loop_of_redis_calls_ends_when_cancelled(queue: RedisQueue) -> None:
    """Without taskd.cancellation, one of the first few dozen cancels was dropped inside
    redis-py's asyncio.wait_for and the loop ran forever (a worker ignored SIGTERM so)."""

    async def loop() -> None:
        while True:
            with contextlib.suppress(DependencyUnavailable):
                await queue.ping()

    await _cancelled_at_random(loop, 300)


async def test_run_forever_ends_when_cancelled(queue: RedisQueue) -> None:
    async def loop() -> None:
        await run_forever("probe", queue.ping, 0.0)

    await _cancelled_at_random(loop, 300)
