"""Structured logging: one JSON object per line (or plain text for a terminal).

Context fields ride on a ``contextvars`` variable and a filter copies them onto every record, so
every line logged while a task runs (taskd's own and the handler's) carries ``task_id``,
``trace_id``, ``attempt``, ``queue`` and ``type``, and every line logged while the API handles a
request carries ``request_id`` and ``trace_id``. Each asyncio task starts with a copy of its
creator's context, so fields bound inside one task never leak into another.

Trace ids: a task's trace id is its task id (storing an incoming trace id with the task would
need a column; the submit log line joins the two, carrying the request's ids and the task id).
An API request's trace id is the trace-id of its W3C ``traceparent`` header when it sends one,
else its request id: the ``X-Request-Id`` header when valid, else a generated one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_fields: ContextVar[dict[str, Any] | None] = ContextVar("taskd_log_fields", default=None)


def bind(**fields: Any) -> Token[dict[str, Any] | None]:
    """Add ``fields`` to every line logged from the current context; ``unbind`` undoes it."""
    current = _fields.get()
    return _fields.set({**current, **fields} if current else fields)


def unbind(token: Token[dict[str, Any] | None]) -> None:
    _fields.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def task_fields(task_id: str, attempt: int, queue: str, type_: str) -> dict[str, Any]:
    """The fields of a task log line; the trace id is the task id (see the module docstring)."""
    return {
        "task_id": task_id,
        "trace_id": task_id,
        "attempt": attempt,
        "queue": queue,
        "type": type_,
    }


def bind_task(task_id: str, attempt: int, queue: str, type_: str) -> None:
    """Name the task on every line logged from the current context (the worker calls this at
    the start of each attempt's own asyncio task, so nothing needs undoing)."""
    fields = task_fields(task_id, attempt, queue, type_)
    current = _fields.get()
    _fields.set({**current, **fields} if current else fields)


class ContextFilter(logging.Filter):
    """Copy the bound context fields onto each record; an explicit ``extra=`` value wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _fields.get()
        if fields:
            attrs = record.__dict__
            for key, value in fields.items():
                attrs.setdefault(key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(doc).decode()


class TextFormatter(logging.Formatter):
    """Plain text for a terminal, with the context fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


class OneLineErrors(logging.Filter):
    """Fold a library's traceback into its message: an outage is one clear line, not a stack
    per retry (asyncpg logs every failed attempt to refill its pool with a traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(err).__name__}: {err}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def setup(level: str = "INFO", json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per request; the metrics cover it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("asyncpg.pool").addFilter(OneLineErrors())
