"""A running process follows its configuration: SIGHUP rereads the YAML file, SSM is polled, and
the log level follows the snapshot. (Each role subscribes what it applies itself.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from taskd.config.live import LiveConfig
from taskd.config.reload import Reloader
from taskd.config.settings import Settings


def apply_log_level(old: Settings, new: Settings) -> None:
    if new.log.level != old.log.level:
        logging.getLogger().setLevel(new.log.level.upper())


@contextlib.asynccontextmanager
async def following(live: LiveConfig, reloader: Reloader | None) -> AsyncIterator[None]:
    """Within the block, reloads happen (SIGHUP, the SSM poll) and the log level is applied."""
    loop = asyncio.get_running_loop()
    unsubscribe = live.subscribe(apply_log_level)
    poller: asyncio.Task[None] | None = None
    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, reloader.sighup)
        if reloader.polls:
            poller = asyncio.create_task(reloader.poll(), name="config poll")
    try:
        yield
    finally:
        unsubscribe()
        if reloader is not None:
            loop.remove_signal_handler(signal.SIGHUP)
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
