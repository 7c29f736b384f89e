"""Handlers: the ``@task`` decorator, the registry it fills, and the context handlers receive."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import msgspec

from taskd.errors import DuplicateHandler, HandlerError

Handler = Callable[["TaskContext", Any], Awaitable[Any]]
ENTRY_POINT_GROUP = "taskd.handlers"


@dataclass
class TaskContext:
    """What a handler knows about the attempt it runs.

    ``task_id`` and ``attempt`` let handlers make side effects idempotent: a task may run more
    than once (at-least-once execution), but each run has a distinct attempt number.
    """

    task_id: str
    attempt: int
    type: str
    queue: str
    tenant: str
    parent_results: dict[str, Any] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)
    # A plain flag: an asyncio.Event per attempt costs more than the rest of the context.
    _cancelled: bool = field(default=False, repr=False)

    def log(self, line: str) -> None:
        """Keep a line with this attempt (the last lines appear in notifications)."""
        self.log_lines.append(line)

    @property
    def cancelled(self) -> bool:
        """True once the task was asked to stop (cancelled, lease lost, or shutdown)."""
        return self._cancelled

    def request_cancel(self) -> None:
        """Called by the worker before it cancels the handler's asyncio task."""
        self._cancelled = True


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    fn: Handler
    timeout: float | None = None
    max_retries: int | None = None
    payload_type: Any = None  # a msgspec.Struct type when the handler annotates one

    def convert(self, payload: Any) -> Any:
        """The payload as the handler wants it; msgspec.ValidationError if it does not fit."""
        if self.payload_type is None:
            return payload
        return msgspec.convert(payload, self.payload_type)


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, HandlerSpec] = {}

    def add(self, spec: HandlerSpec) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None and existing.fn is not spec.fn:
            raise DuplicateHandler(
                f"two handlers for task type {spec.name!r}: "
                f"{_where(existing.fn)} and {_where(spec.fn)}"
            )
        self._specs[spec.name] = spec

    def get(self, name: str) -> HandlerSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def merge(self, other: Registry) -> None:
        for spec in other._specs.values():
            self.add(spec)


# Handlers decorated at import time land here; workers copy what their modules registered.
default_registry = Registry()


def task(
    name: str, *, timeout: float | None = None, max_retries: int | None = None
) -> Callable[[Handler], Handler]:
    """Register an async function as the handler of task type ``name``."""

    def decorate(fn: Handler) -> Handler:
        if not inspect.iscoroutinefunction(fn):
            raise HandlerError(f"handler for {name!r} must be an async function")
        default_registry.add(HandlerSpec(name, fn, timeout, max_retries, _payload_type(fn)))
        return fn

    return decorate


def _payload_type(fn: Handler) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: treat the payload as plain JSON
        return None
    params = list(inspect.signature(fn).parameters)
    if len(params) < 2:
        return None
    hint = hints.get(params[1])
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return hint
    return None


def _where(fn: Handler) -> str:
    return f"{fn.__module__}.{getattr(fn, '__qualname__', fn)}"


def load_handlers(
    modules: Iterable[str], *, entry_point_group: str = ENTRY_POINT_GROUP
) -> Registry:
    """Import handler modules (and entry points); returns what they registered."""
    # Like `python -m`, resolve modules from the working directory, so `--handlers app.tasks`
    # works from a project checkout whichever way taskd was installed.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise HandlerError(f"cannot import handler module {module!r}: {e}") from e
    for ep in entry_points(group=entry_point_group):
        ep.load()
    registry = Registry()
    registry.merge(default_registry)
    return registry
