"""The thin loop every background service runs: tick, back off on outage, log once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from taskd.cancellation import raise_if_cancelling
from taskd.errors import DependencyUnavailable

log = logging.getLogger("taskd.loop")


async def run_forever(
    name: str, once: Callable[[], Awaitable[object]], interval: float, *, max_backoff: float = 30.0
) -> None:
    """Call ``once`` every ``interval`` seconds until cancelled.

    An unreachable dependency doubles the pause up to ``max_backoff`` and is logged once per
    outage; any other exception is logged with its traceback and the loop carries on.
    """
    pause = interval
    down = False
    while True:
        try:
            await once()
        except DependencyUnavailable as e:
            if not down:
                log.warning("%s: %s; retrying with backoff", name, e)
                down = True
            pause = min(max(pause * 2, interval), max_backoff)
        except Exception:
            log.exception("%s failed; retrying", name)
            pause = min(max(pause * 2, interval), max_backoff)
        else:
            if down:
                log.warning("%s: recovered", name)
                down = False
            pause = interval
        raise_if_cancelling()  # a library may have dropped it (taskd.cancellation)
        await asyncio.sleep(pause)
