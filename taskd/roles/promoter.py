"""The promoter role: reap expired leases, reconcile Postgres into Redis, rescue lost tasks,
export the queue gauges, publish dead letters."""

from __future__ import annotations

import asyncio
import contextlib

from taskd.config.settings import Settings
from taskd.dlq.factory import make_sink
from taskd.roles.resources import Resources
from taskd.roles.schedules import start_firer
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
    firer = await start_firer(resources)  # declares the configured schedules first
    loops = [
        asyncio.create_task(run_forever("reap", reaper.run_once, p.interval_seconds)),
        asyncio.create_task(run_forever("reconcile", reconciler.run_once, p.interval_seconds)),
        asyncio.create_task(run_forever("rescue", rescuer.run_once, p.interval_seconds)),
        asyncio.create_task(run_forever("queue gauges", gauges.run_once, p.interval_seconds)),
    ]
    loops.append(asyncio.create_task(run_forever("schedules", firer.run_once, p.interval_seconds)))
    sink = make_sink(s.dlq)
    publisher: DlqPublisher | None = None
    if sink is not None:
        publisher = DlqPublisher(OutboxStore(resources.pool), sink, s.dlq, s.retry)
        loops.append(
            asyncio.create_task(
                run_forever("dlq publish", publisher.run_once, s.dlq.interval_seconds)
            )
        )
    unsubscribe = resources.live.subscribe(
        lambda old, new: _retune(new, reaper, rescuer, publisher)
    )
    try:
        await stop.wait()
    finally:
        unsubscribe()
        for t in loops:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*loops, return_exceptions=True)
        if sink is not None:
            await sink.close()


def _retune(s: Settings, reaper: Reaper, rescuer: Rescuer, publisher: DlqPublisher | None) -> None:
    """A reloaded configuration's retry defaults and DLQ pass settings (DESIGN §7)."""
    reaper.max_retries_default = s.retry.max_retries
    rescuer.max_retries_default = s.retry.max_retries
    if publisher is not None:
        publisher.retry = s.retry
        publisher.settings = s.dlq  # its restart-required fields are the running ones
