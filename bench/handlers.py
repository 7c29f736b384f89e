"""The no-op handler the benchmarks run."""

from __future__ import annotations

from typing import Any

from taskd import TaskContext, task


@task("bench.noop")
async def noop(ctx: TaskContext, payload: Any) -> None:
    return None
