"""The promoter role declares the configured schedules and fires them."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from taskd.config.settings import Settings
from taskd.roles import promoter
from taskd.roles.resources import open_resources
from taskd.schedule.spec import ScheduleSpec
from taskd.store.tasks import TaskStore
from tests.helpers import eventually


async def test_the_promoter_declares_configured_schedules_and_fires_them(
    settings: Settings, store: TaskStore, queue_name: str
) -> None:
    spec = ScheduleSpec(name="beat", every=1.0, task={"type": "t.beat", "queue": queue_name})
    configured = msgspec.structs.replace(
        settings, schedules=(spec,), dlq=msgspec.structs.replace(settings.dlq, sink="none")
    )
    stop = asyncio.Event()
    async with open_resources(configured) as resources:
        role = asyncio.create_task(promoter.run(resources, stop))

        async def fired() -> Any:
            return await store.pool.fetchval(
                "SELECT count(*) FROM schedule_fires f JOIN schedules s ON s.id = f.schedule_id "
                "WHERE s.name = 'beat' AND s.source = 'config' AND f.task_id IS NOT NULL"
            )

        try:
            await eventually(fired, timeout=10)
        finally:
            stop.set()
            await asyncio.wait_for(role, 10)
