"""Pure domain types shared by every layer."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec


class TaskStatus(StrEnum):
    WAITING = "WAITING"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.UPSTREAM_FAILED}
)


class Outcome(StrEnum):
    """How one attempt ended (``attempt_history[].outcome``)."""

    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    LOST = "LOST"
    CANCELLED = "CANCELLED"


class TaskError(msgspec.Struct, frozen=True):
    """The last failure of a task, as API.md shows it."""

    type: str
    message: str
    retryable: bool


class LeasedTask(msgspec.Struct, frozen=True):
    """A task flipped to RUNNING for one attempt: what a worker needs to run it."""

    id: str
    queue: str
    type: str
    priority: int
    payload: Any
    attempt: int
    attempt_base: int
    max_retries: int
    timeout: float
    backoff: dict[str, Any] | None
    lease_token: str
    tenant: str
    waited: float = 0.0  # seconds from when this attempt was due (run_at) to its start
    has_parents: bool = False  # a DAG child: the worker fetches ctx.parent_results

    @property
    def attempts_left(self) -> int:
        """Further attempts this task may still make after the current one."""
        return self.max_retries + 1 - (self.attempt - self.attempt_base)
