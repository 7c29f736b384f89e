"""Run one or more roles in this process until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from taskd.config.live import LiveConfig
from taskd.config.reload import Reloader
from taskd.config.settings import Settings
from taskd.registry import Registry
from taskd.roles import api, notifier, promoter, worker
from taskd.roles.reload import following
from taskd.roles.resources import open_resources, ops_app, serve

ROLES = ("api", "worker", "notifier", "promoter")
log = logging.getLogger("taskd")


async def run_roles(
    settings: Settings,
    roles: Sequence[str],
    registry: Registry,
    reloader: Reloader | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``roles`` until SIGTERM/SIGINT (or ``stop``); with a started ``reloader``, SIGHUP and
    the SSM poll reload the configuration."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    live = reloader.live if reloader is not None else LiveConfig.fixed(settings)
    async with open_resources(settings, live) as res, following(live, reloader):
        unfollow = notifier.follow_defaults(res)  # completions write the configured defaults
        ops = None
        if "api" not in roles:  # the api role serves /metrics and the probes on its own port
            ops = await serve(ops_app(res), settings.ops.host, settings.ops.port)
        tasks = []
        if "api" in roles:
            tasks.append(asyncio.create_task(api.run(res, stop)))
        if "worker" in roles:
            tasks.append(asyncio.create_task(worker.run(res, stop, registry)))
        if "promoter" in roles:
            tasks.append(asyncio.create_task(promoter.run(res, stop)))
        if "notifier" in roles:
            tasks.append(asyncio.create_task(notifier.run(res, stop)))
        log.info("running roles: %s", ", ".join(roles))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            unfollow()
            if ops is not None:
                await ops.cleanup()
