"""The promoter role: reap expired leases, reconcile Postgres into Redis, rescue lost tasks,
export the queue gauges, publish dead letters."""

from __future__ import annotations

import asyncio
import contextlib

from taskd.dlq.factory import make_sink
from taskd.roles.resources import Resources
from taskd.services.dlq_publisher import DlqPublisher
from taskd.services.loop import run_forever
from taskd.services.maintenance import Reaper, Reconciler, Rescuer
from taskd.services.queue_gauges import QueueGauges
from taskd.store.outbox import OutboxStore


async def run(resources: Resources, stop: asyncio.Event) -> None:
    s = resources.settings
    p, store, queue = s.promoter, resources.store, resources.queue
    reaper = Reaper(store, queue, s.retry.max_retries, p.batch_size)
    reconciler = Reconciler(store, queue, p.reconcile_grace_seconds, p.batch_size)
    rescuer = Rescuer(store, queue, s.worker.lease_seconds, s.retry.max_retries, batch=p.batch_size)
    gauges = QueueGauges(store, queue)
    loops = [
        asyncio.create_task(run_forever("reap", reaper.run_once, p.interval_seconds)),
        asyncio.create_task(run_forever("reconcile", reconciler.run_once, p.interval_seconds)),
        asyncio.create_task(run_forever("rescue", rescuer.run_once, p.interval_seconds)),
        asyncio.create_task(run_forever("queue gauges", gauges.run_once, p.interval_seconds)),
    ]
    sink = make_sink(s.dlq)
    if sink is not None:
        publisher = DlqPublisher(OutboxStore(resources.pool), sink, s.dlq, s.retry)
        loops.append(
            asyncio.create_task(
                run_forever("dlq publish", publisher.run_once, s.dlq.interval_seconds)
            )
        )
    try:
        await stop.wait()
    finally:
        for t in loops:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*loops, return_exceptions=True)
        if sink is not None:
            await sink.close()
