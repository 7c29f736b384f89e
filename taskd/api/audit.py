"""The audit log: every action that changes tasks, taken through the API or the dashboard, is
recorded with who, when, what, which filter and how many (table ``audit_log``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from taskd.api.auth import Principal
from taskd.api.context import ctx
from taskd.errors import DependencyUnavailable
from taskd.store.ui import AuditEntry, UiStore

log = logging.getLogger("taskd.audit")


async def audit(
    request: web.Request,
    principal: Principal,
    action: str,
    task_ids: Sequence[uuid.UUID],
    *,
    via: str = "api",
    filter: dict[str, Any] | None = None,
) -> None:
    """Record an action that has been taken. The action is not undone when Postgres refuses
    the record (it has happened); the refusal is logged with everything the record held."""
    entry = AuditEntry(principal.subject, principal.tenant, via, action, task_ids, filter)
    try:
        await UiStore(ctx(request).store.pool).audit(entry)
    except DependencyUnavailable as e:
        log.error(
            "audit record lost: %s by %s (tenant %s) via %s on %d tasks %s: %s",
            action,
            principal.subject,
            principal.tenant,
            via,
            len(task_ids),
            [str(i) for i in task_ids[:20]],
            e,
        )
