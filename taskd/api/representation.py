"""Rows to the task representation of API.md."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec

from taskd.api.schemas import AttemptView, ErrorDoc, NotifySpec, TaskView


# Rows written together share their times (created_at is the transaction's now(), and so is a
# run_at left unset), so a batch of 1,000 formats two values, not 2,000 (~1 us each). Equal
# aware datetimes are one instant, and the text is that instant in UTC: a hit is always right.
@lru_cache(maxsize=1024)
def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(doc: Any) -> ErrorDoc | None:
    if not doc:
        return None
    return ErrorDoc(
        str(doc.get("type", "")), str(doc.get("message", "")), bool(doc.get("retryable", False))
    )


def task_view(
    row: Mapping[str, Any],
    *,
    default_max_retries: int,
    default_timeout: float,
    history: list[Mapping[str, Any]] | None = None,
) -> TaskView:
    view = TaskView(
        id=str(row["id"]),
        type=row["type"],
        queue=row["queue"],
        priority=row["priority"],
        status=row["status"],
        payload=row["payload"],
        labels=row["labels"] or {},
        attempts=row["attempt"],
        max_retries=row["max_retries"] if row["max_retries"] is not None else default_max_retries,
        timeout=row["timeout"] if row["timeout"] is not None else default_timeout,
        run_at=rfc3339(row["run_at"]) or "",
        created_at=rfc3339(row["created_at"]) or "",
        started_at=rfc3339(row["started_at"]),
        finished_at=rfc3339(row["finished_at"]),
        result=row["result"],
        error=_error(row["error"]),
        depends_on=[str(d) for d in row["depends_on"] or ()],
        dag_id=str(row["dag_id"]) if row["dag_id"] else None,
        idempotency_key=row["idempotency_key"],
        notify=msgspec.convert(row["notify"], NotifySpec) if row["notify"] else None,
    )
    if history is not None:
        view.attempt_history = [
            AttemptView(
                attempt=h["attempt"],
                worker=h["worker"],
                started_at=rfc3339(h["started_at"]),
                finished_at=rfc3339(h["finished_at"]),
                outcome=h["outcome"],
                error=_error(h["error"]),
            )
            for h in history
        ]
    return view
