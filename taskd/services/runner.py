"""Run one attempt of a task and decide what happens next: success, retry or final failure."""

from __future__ import annotations

import dataclasses
import logging
import traceback
from typing import Any

import msgspec

from taskd.backoff import Backoff
from taskd.errors import NonRetryableError
from taskd.registry import HandlerSpec, Registry, TaskContext
from taskd.store.tasks import AttemptOutcome
from taskd.types import LeasedTask, Outcome, TaskStatus

log = logging.getLogger("taskd.worker")

_result_encoder = msgspec.json.Encoder()
# Lines of a handler's log (ctx.log) kept with each attempt.
LOG_TAIL_LINES = 50
_SCALARS = (type(None), str, int, bool)


def error_doc(kind: str, message: str, retryable: bool) -> dict[str, Any]:
    return {"type": kind, "message": message[:4000], "retryable": retryable}


def log_tail(lines: list[str], keep: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    """The last ``keep`` lines of a handler's log (a multi-line entry counts per line), each
    cut to 1,000 characters."""
    tail: list[str] = []
    for entry in reversed(lines):
        for line in reversed(entry.splitlines() or [""]):
            tail.append(line[:1000])
            if len(tail) == keep:
                return tuple(reversed(tail))
    return tuple(reversed(tail))


class Runner:
    def __init__(self, registry: Registry, default_backoff: Backoff) -> None:
        self.registry = registry
        self.default_backoff = default_backoff

    async def run(self, task: LeasedTask, ctx: TaskContext) -> AttemptOutcome:
        """Run one attempt; logs its start and end (the task fields come from the log context)."""
        log.debug("attempt started")
        outcome = await self._attempt(task, ctx)
        if ctx.log_lines:  # kept with the attempt: notifications show the last lines
            outcome = dataclasses.replace(outcome, log=log_tail(ctx.log_lines))
        log_outcome(outcome)
        return outcome

    async def _attempt(self, task: LeasedTask, ctx: TaskContext) -> AttemptOutcome:
        spec = self.registry.get(task.type)
        if spec is None:
            msg = f"no handler is registered for task type {task.type!r} on this worker"
            return self._fail(task, Outcome.ERROR, error_doc("UnknownTaskType", msg, False))
        try:
            payload = spec.convert(task.payload)
        except msgspec.ValidationError as e:
            doc = error_doc("InvalidPayload", f"payload does not fit {spec.name}: {e}", False)
            return self._fail(task, Outcome.ERROR, doc)
        return await self._call(task, spec, ctx, payload)

    async def _call(
        self, task: LeasedTask, spec: HandlerSpec, ctx: TaskContext, payload: Any
    ) -> AttemptOutcome:
        # The attempt's timeout is the worker's: it cancels the handler's asyncio task (a timer
        # handle per attempt costs a third of what ``asyncio.timeout`` does on this hot path).
        try:
            result = await spec.fn(ctx, payload)
        except NonRetryableError as e:
            return self._fail(task, Outcome.ERROR, error_doc(type(e).__name__, str(e), False))
        except Exception as e:
            ctx.log("".join(traceback.format_exception(e, limit=-5)).rstrip())
            return self._retry_or_fail(
                task, Outcome.ERROR, error_doc(type(e).__name__, str(e), True)
            )
        try:
            if not isinstance(result, _SCALARS):  # scalars are JSON: skip the trial encoding
                _result_encoder.encode(result)
        except (TypeError, msgspec.EncodeError) as e:
            doc = error_doc("InvalidResult", f"the handler's result is not JSON: {e}", False)
            return self._fail(task, Outcome.ERROR, doc)
        return AttemptOutcome(
            task.id, task.attempt, TaskStatus.SUCCESS.value, Outcome.SUCCESS.value, result=result
        )

    def cancelled(self, task: LeasedTask) -> AttemptOutcome:
        """The outcome of an attempt stopped by a cancel request: CANCELLED, no retry."""
        doc = error_doc("Cancelled", "the task was cancelled while it ran", False)
        return AttemptOutcome(
            task.id, task.attempt, TaskStatus.CANCELLED.value, Outcome.CANCELLED.value, error=doc
        )

    def timed_out(self, task: LeasedTask) -> AttemptOutcome:
        """The outcome of an attempt that ran past its timeout: retried, or the last failure."""
        msg = f"attempt exceeded its timeout of {task.timeout:g}s"
        outcome = self._retry_or_fail(task, Outcome.TIMEOUT, error_doc("Timeout", msg, True))
        log_outcome(outcome)
        return outcome

    async def interrupted(self, task: LeasedTask) -> AttemptOutcome:
        """The outcome of an attempt the worker cut short at shutdown: LOST, re-queued now."""
        doc = error_doc("WorkerShutdown", "the worker stopped before the handler finished", True)
        outcome = self._retry_or_fail(task, Outcome.LOST, doc, immediate=True)
        log_outcome(outcome)
        return outcome

    def _fail(self, task: LeasedTask, outcome: Outcome, doc: dict[str, Any]) -> AttemptOutcome:
        return AttemptOutcome(
            task.id, task.attempt, TaskStatus.FAILED.value, outcome.value, error=doc
        )

    def _retry_or_fail(
        self, task: LeasedTask, outcome: Outcome, doc: dict[str, Any], *, immediate: bool = False
    ) -> AttemptOutcome:
        if task.attempts_left <= 0:
            return self._fail(task, outcome, doc)
        delay = 0.0 if immediate else self.backoff_for(task).delay(task.attempt)
        return AttemptOutcome(
            task.id, task.attempt, TaskStatus.PENDING.value, outcome.value, error=doc, delay=delay
        )

    def backoff_for(self, task: LeasedTask) -> Backoff:
        if not task.backoff:
            return self.default_backoff
        try:
            return msgspec.convert(task.backoff, Backoff)
        except msgspec.ValidationError:
            return self.default_backoff


def log_outcome(o: AttemptOutcome) -> None:
    """One line per attempt end: success at DEBUG (the hot path), a retry at INFO, the last
    failure at WARNING."""
    if o.status == TaskStatus.SUCCESS.value:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("attempt succeeded", extra={"outcome": o.outcome})
        return
    err = o.error or {}
    extra = {"outcome": o.outcome, "error_type": err.get("type")}
    if o.status == TaskStatus.PENDING.value:
        log.info(
            "attempt %d ended %s (%s: %s); retrying in %.3gs",
            o.attempt,
            o.outcome,
            err.get("type"),
            err.get("message"),
            o.delay,
            extra={**extra, "retry_in": o.delay},
        )
    else:
        log.warning(
            "attempt %d ended %s (%s: %s); the task fails",
            o.attempt,
            o.outcome,
            err.get("type"),
            err.get("message"),
            extra=extra,
        )
