"""Helpers for tests: run a worker in-process, wait for states with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg

from taskd.config.settings import Settings
from taskd.queue.client import Enqueue, RedisQueue
from taskd.registry import Handler, HandlerSpec, Registry
from taskd.services.worker import Worker
from taskd.store.tasks import NewTask, TaskStore
from taskd.types import TERMINAL, TaskStatus


def registry_of(**handlers: Handler) -> Registry:
    """A registry from ``name=handler`` pairs (dots spelled as double underscores)."""
    reg = Registry()
    for name, fn in handlers.items():
        reg.add(HandlerSpec(name.replace("__", "."), fn))
    return reg


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, store: TaskStore, queue: RedisQueue, registry: Registry, **kw: Any
) -> AsyncIterator[Worker]:
    worker = Worker(settings.worker, settings.retry, store, queue, registry, **kw)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``check`` until it returns a truthy value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


async def wait_terminal(store: TaskStore, task_id: str, timeout: float = 10.0) -> asyncpg.Record:
    async def check() -> asyncpg.Record | None:
        row = await store.get(uuid.UUID(task_id), None)
        return row if row is not None and TaskStatus(row["status"]) in TERMINAL else None

    return await eventually(check, timeout=timeout)


def new_task(
    queue: str,
    type_: str = "t.ok",
    *,
    priority: int = 0,
    delay: float = 0.0,
    payload: Any = None,
    max_retries: int | None = None,
    timeout: float | None = None,
    backoff: dict[str, Any] | None = None,
) -> NewTask:
    from taskd.ids import uuid7

    return NewTask(
        id=uuid7(),
        tenant="t",
        type=type_,
        queue=queue,
        priority=priority,
        payload=payload if payload is not None else {},
        labels={},
        max_retries=max_retries,
        timeout=timeout,
        backoff=backoff,
        run_at=None,
        delay=delay,
    )


async def submit(
    store: TaskStore, queue: RedisQueue, *tasks: NewTask, enqueue: bool = True
) -> list[str]:
    rows = await store.insert(list(tasks))
    if enqueue:
        for r in rows:
            await queue.enqueue(
                r["queue"], [Enqueue(str(r["id"]), r["priority"], int(r["delay_ms"]))]
            )
    return [str(r["id"]) for r in rows]
