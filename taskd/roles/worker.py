"""The worker role: run registered handlers for leased tasks."""

from __future__ import annotations

import asyncio

from taskd.registry import Registry
from taskd.roles.resources import Resources
from taskd.services.worker import Worker


async def run(resources: Resources, stop: asyncio.Event, registry: Registry) -> None:
    s = resources.settings
    worker = Worker(s.worker, s.retry, resources.store, resources.queue, registry)
    unsubscribe = resources.live.subscribe(
        lambda old, new: worker.retune(new.worker.concurrency, new.retry)
    )
    task = asyncio.create_task(worker.run())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    unsubscribe()
    worker.stop()
    stopper.cancel()
    await task
