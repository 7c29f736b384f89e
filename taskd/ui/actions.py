"""The changes the dashboard makes: cancel, retry (redrive), in bulk too, each audited."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from taskd.errors import DependencyUnavailable
from taskd.store.ui import AuditEntry
from taskd.ui.security import Viewer
from taskd.ui.state import UiState

log = logging.getLogger("taskd.ui")
# A bulk action on a selection touches at most this many tasks.
MAX_SELECTION = 500


@dataclass(frozen=True)
class Done:
    action: str
    changed: list[uuid.UUID]
    asked: int


async def cancel_one(ui: UiState, task_id: uuid.UUID, tenant: str | None) -> asyncpg.Record | None:
    """As POST /v1/tasks/{id}/cancel, without waiting: live pages show the end."""
    row = await ui.dags.cancel(task_id, tenant)
    if row is None:
        return None
    marker_ms = int(ui.api.settings.worker.lease_seconds * 4000)
    try:
        await ui.api.queue.cancel(row["queue"], str(task_id), marker_ms)
    except DependencyUnavailable as e:
        # Postgres holds the request: the worker's lease expires and the task ends CANCELLED.
        log.warning("cancel of %s recorded, but Redis is unreachable: %s", task_id, e)
    return row


async def retry_one(ui: UiState, task_id: uuid.UUID, tenant: str | None) -> asyncpg.Record | None:
    row = await ui.dags.redrive(task_id, tenant)
    if row is not None:
        await ui.api.submit.enqueue_pending([row])
    return row


async def record(
    ui: UiState,
    viewer: Viewer,
    action: str,
    ids: Sequence[uuid.UUID],
    filter: dict[str, Any] | None = None,
) -> None:
    p = viewer.principal
    entry = AuditEntry(p.subject, p.tenant, "ui", action, ids, filter)
    try:
        await ui.store.audit(entry)
    except DependencyUnavailable as e:
        log.error("audit record lost: %s by %s on %d tasks: %s", action, p.subject, len(ids), e)


async def act(
    ui: UiState,
    viewer: Viewer,
    action: str,
    ids: Sequence[uuid.UUID],
    *,
    audit_as: str | None = None,
    filter: dict[str, Any] | None = None,
) -> Done:
    """Cancel or retry each of ``ids`` the viewer may change; retries are paced."""
    changed = []
    for task_id in ids:
        if action == "retry":
            await ui.pacer.take()
            row = await retry_one(ui, task_id, viewer.tenant)
        else:
            row = await cancel_one(ui, task_id, viewer.tenant)
        if row is not None:
            changed.append(task_id)
    if changed:
        await record(ui, viewer, audit_as or action, changed, filter)
    return Done(action, changed, len(ids))
