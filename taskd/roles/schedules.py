"""The promoter's schedule firer, composed: declare the configured schedules, then fire."""

from __future__ import annotations

import logging

from taskd.api.schedules import ScheduleService
from taskd.api.submit import SubmitService
from taskd.clock import SystemClock
from taskd.roles.resources import Resources
from taskd.services.schedules import ScheduleFirer
from taskd.store.schedules import ScheduleStore

log = logging.getLogger("taskd.schedules")


async def start_firer(resources: Resources) -> ScheduleFirer:
    """Upsert ``schedules:`` of the configuration by name (removing configuration schedules
    no longer declared) and build the firer the promoter loop runs."""
    s, clock = resources.settings, SystemClock()
    store = ScheduleStore(resources.store)
    submit = SubmitService(resources.store, resources.queue, s)
    removed = await ScheduleService(store, submit, clock).declare(s.schedules)
    if s.schedules or removed:
        log.info(
            "declared %d configured schedules; removed %d no longer declared",
            len(s.schedules),
            len(removed),
        )
    return ScheduleFirer(
        store, resources.queue, clock, cancel_marker_ms=int(s.worker.lease_seconds * 4000)
    )
