"""Honour a cancel request that a library dropped.

Python 3.11's ``asyncio.wait_for`` returns its inner call's result, and forgets the cancel
request, when the cancel arrives as that call completes (CPython gh-86296, fixed in 3.12).
redis-py wraps every socket write in ``wait_for`` when a socket timeout is set, so a task
cancelled during a Redis call can carry on as if it never was: a background loop then never
ends, and the process never stops on SIGTERM (seen: a worker still running 15 minutes after
it). The task still counts the request (``Task.cancelling()``), so it can be raised again.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task has a cancel request it has not acted on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("a cancel request dropped by asyncio.wait_for (gh-86296)")
