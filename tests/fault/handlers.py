"""Handlers for fault tests. Every execution is appended to a log so a checker can prove that no
task ran after it was terminal; the log is a plain file, so it survives database outages."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from taskd import TaskContext, task

LOG_ENV = "TASKD_TEST_EXEC_LOG"


def _log(event: str, ctx: TaskContext) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = f"{event} {ctx.task_id} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one small O_APPEND write: atomic between processes
    finally:
        os.close(fd)


@task("fault.work")
async def work(ctx: TaskContext, payload: Any) -> dict[str, Any]:
    """Sleep ``seconds`` (an awaitable pause, like real I/O)."""
    _log("start", ctx)
    await asyncio.sleep(float(payload.get("seconds", 0.05)))
    _log("end", ctx)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@task("fault.block")
async def block(ctx: TaskContext, payload: Any) -> dict[str, Any]:
    """Block the event loop for ``seconds`` on the first attempt (a stalled loop), then return."""
    _log("start", ctx)
    if ctx.attempt == 1:
        time.sleep(float(payload.get("seconds", 1.0)))  # noqa: ASYNC251 - the point of it
    _log("end", ctx)
    return {"attempt": ctx.attempt, "pid": os.getpid()}
