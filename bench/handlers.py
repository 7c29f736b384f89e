"""The handlers the benchmarks run."""

from __future__ import annotations

import os
import time
from typing import Any

import redis.asyncio as aioredis

from taskd import TaskContext, task

_redis: aioredis.Redis | None = None


@task("bench.noop")
async def noop(ctx: TaskContext, payload: Any) -> None:
    return None


@task("bench.latency")
async def latency(ctx: TaskContext, payload: Any) -> None:
    """For bench.latency: how long after the client sent it this task's handler started.
    ``"<seq> <seconds>"`` is pushed to the Redis list ``payload["list"]`` (Redis db 9 by
    default, away from taskd's own keys)."""
    lag = time.time() - payload["sent"]  # first: what follows is not part of the latency
    global _redis
    if _redis is None:
        url = os.environ.get("TASKD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
        _redis = aioredis.Redis.from_url(url)
    await _redis.rpush(payload["list"], f"{payload['seq']} {lag:.6f}")
