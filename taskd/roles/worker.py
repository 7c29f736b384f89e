"""The worker role: run registered handlers (and the built-in ones) for leased tasks."""

from __future__ import annotations

import asyncio

from taskd.builtin_handlers import Builtins, with_builtins
from taskd.queue.presence import WorkerPresence
from taskd.registry import Registry
from taskd.roles.resources import Resources
from taskd.services.presence import PresenceAnnouncer
from taskd.services.worker import Worker


async def run(resources: Resources, stop: asyncio.Event, registry: Registry) -> None:
    s = resources.settings
    builtins = Builtins(s.notify)
    registry = with_builtins(registry, builtins)
    worker = Worker(s.worker, s.retry, resources.store, resources.queue, registry)
    unfollow = resources.live.subscribe(lambda old, new: builtins.retune(new.notify))
    unsubscribe = resources.live.subscribe(
        lambda old, new: worker.retune(new.worker.concurrency, new.retry)
    )
    task = asyncio.create_task(worker.run())
    # Worker presence for the dashboard and GET /v1/tasks/{id}/explain.
    announcer = asyncio.create_task(
        PresenceAnnouncer(worker, WorkerPresence(resources.queue.client)).run()
    )
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    unsubscribe()
    unfollow()
    worker.stop()
    stopper.cancel()
    announcer.cancel()
    await asyncio.gather(announcer, return_exceptions=True)  # it retires the worker
    try:
        await task
    finally:
        await builtins.close()
