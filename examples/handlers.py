"""Demo handlers used by the README: ``taskd --role all --handlers examples.handlers``."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from taskd import NonRetryableError, TaskContext, task


@task("demo.echo")
async def echo(ctx: TaskContext, payload: Any) -> Any:
    """Return the payload unchanged."""
    return payload


class SleepPayload(msgspec.Struct):
    seconds: float = 1.0


@task("demo.sleep")
async def sleep(ctx: TaskContext, payload: SleepPayload) -> dict[str, float]:
    """Sleep for ``seconds``; a payload that is not ``{"seconds": number}`` fails the task."""
    if payload.seconds < 0:
        raise NonRetryableError("seconds must be >= 0")
    await asyncio.sleep(payload.seconds)
    return {"slept": payload.seconds}


class FlakyPayload(msgspec.Struct):
    fail_times: int = 1


@task("demo.flaky")
async def flaky(ctx: TaskContext, payload: FlakyPayload) -> dict[str, int]:
    """Raise on attempts 1..fail_times, then succeed."""
    if ctx.attempt <= payload.fail_times:
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return {"succeeded_on_attempt": ctx.attempt}


@task("demo.fail")
async def fail(ctx: TaskContext, payload: Any) -> None:
    """Always raise (retried until the budget is spent)."""
    raise RuntimeError("demo.fail always fails")
