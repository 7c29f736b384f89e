"""Why is a task not running? ``GET /v1/tasks/{id}/explain`` and the dashboard's Task page.

Postgres says what state the task is in; Redis says where it sits in its queue (ready with n
tasks ahead, delayed until t, leased until t, or missing) and which workers are alive and serve
its queue and type. The answer is a list of reasons, most important first, each with a stable
``code`` for programs and a ``message`` for people.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from taskd.api.context import ctx, require
from taskd.api.errors import ApiError
from taskd.api.representation import rfc3339
from taskd.queue.presence import Position, WorkerInfo, WorkerPresence, serving
from taskd.store.ui import UiStore

routes = web.RouteTableDef()
_encoder = msgspec.json.Encoder()


class ParentState(msgspec.Struct):
    id: str
    key: str | None
    status: str


class Reason(msgspec.Struct, omit_defaults=True):
    """One reason. ``code`` is one of: finished, upstream_failed, waiting_on_parents,
    due_later, not_queued, no_worker_for_queue, no_worker_for_type, queued, leased,
    lease_missing, cancel_requested."""

    code: str
    message: str
    parents: list[ParentState] | None = None
    at: str | None = None  # due time, or lease deadline
    worker: str | None = None
    ahead: int | None = None


class Explanation(msgspec.Struct):
    id: str
    status: str
    summary: str
    reasons: list[Reason]


def _when(ms: int | None) -> str | None:
    if ms is None:
        return None
    return rfc3339(datetime.fromtimestamp(ms / 1000, UTC))


def _in(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _terminal(row: Mapping[str, Any], parents: Sequence[ParentState]) -> list[Reason]:
    status = row["status"]
    if status == "SUCCESS":
        return [Reason("finished", "It finished successfully.")]
    if status == "UPSTREAM_FAILED":
        bad = [p for p in parents if p.status != "SUCCESS"]
        err = row["error"] or {}
        text = err.get("message") or "a task it depends on did not succeed"
        return [Reason("upstream_failed", f"It will not run: {text}. Retry it to run it.", bad)]
    attempts = row["attempt"]
    return [
        Reason(
            "finished",
            f"It ended {status} after {attempts} attempt{'s' if attempts != 1 else ''}; "
            "retry it to run it again.",
        )
    ]


def _waiting(parents: Sequence[ParentState]) -> list[Reason]:
    unmet = [p for p in parents if p.status != "SUCCESS"]
    names = ", ".join(f"{p.key or p.id} ({p.status})" for p in unmet)
    return [
        Reason(
            "waiting_on_parents",
            f"Waiting on {len(unmet)} of {len(parents)} parent tasks: {names}.",
            list(unmet),
        )
    ]


def _workers(row: Mapping[str, Any], workers: Sequence[WorkerInfo]) -> Reason | None:
    queue, type_ = row["queue"], row["type"]
    on_queue = [w for w in workers if queue in w.queues]
    if not on_queue:
        return Reason("no_worker_for_queue", f"No live worker serves the queue {queue!r}.")
    if not serving(on_queue, queue, type_):
        return Reason(
            "no_worker_for_type",
            f"{len(on_queue)} live worker{'s' if len(on_queue) != 1 else ''} serve the queue "
            f"{queue!r}, but none has a handler for the type {type_!r}: a worker that "
            "leases it fails it (UnknownTaskType).",
        )
    return None


def _pending(
    row: Mapping[str, Any], position: Position, workers: Sequence[WorkerInfo], now: datetime
) -> list[Reason]:
    run_at: datetime = row["run_at"]
    reasons: list[Reason] = []
    if run_at > now:
        after = row["attempt"]
        why = f"backoff after attempt {after} failed" if after else "delayed when submitted"
        reasons.append(
            Reason(
                "due_later",
                f"Due at {rfc3339(run_at)} (in {_in((run_at - now).total_seconds())}): {why}.",
                at=rfc3339(run_at),
            )
        )
    elif position.where is None:
        reasons.append(
            Reason(
                "not_queued",
                "Postgres has it PENDING but Redis does not track it yet: the promoter's "
                "reconcile step queues it within seconds.",
            )
        )
    no_worker = _workers(row, workers)
    if no_worker is not None:
        reasons.append(no_worker)
    elif run_at <= now and position.where in ("ready", "delayed"):
        ahead = position.ahead
        reasons.append(
            Reason(
                "queued",
                f"Due and queued: {ahead} task{'s' if ahead != 1 else ''} of its queue run "
                "before it (higher priority or older).",
                ahead=ahead,
            )
        )
    return reasons


def _running(row: Mapping[str, Any], position: Position) -> list[Reason]:
    worker = row["worker"] or "?"
    reasons = []
    if row.get("cancel_requested_at") is not None:
        reasons.append(
            Reason("cancel_requested", "Cancellation was requested; its worker is stopping it.")
        )
    if position.where == "active":
        at = _when(position.at_ms)
        reasons.append(
            Reason(
                "leased",
                f"Running: leased by worker {worker} until {at} (renewed while it runs).",
                at=at,
                worker=worker,
            )
        )
    else:
        reasons.append(
            Reason(
                "lease_missing",
                f"Postgres says worker {worker} runs it, but Redis holds no lease: if that "
                "worker is gone, the promoter reclaims the task within a lease period.",
                worker=worker,
            )
        )
    return reasons


async def explain(
    row: Any, ui: UiStore, presence: WorkerPresence, now: datetime | None = None
) -> Explanation:
    """The reasons for ``row`` (a task row) being where it is."""
    now = now or datetime.now(UTC)
    status = row["status"]
    parents = [
        ParentState(str(p["id"]), p["dag_key"], p["status"]) for p in await ui.parents(row["id"])
    ]
    if status in ("SUCCESS", "FAILED", "CANCELLED", "UPSTREAM_FAILED"):
        reasons = _terminal(row, parents)
    elif status == "WAITING":
        reasons = _waiting(parents)
    else:
        position = await presence.position(row["queue"], str(row["id"]))
        if status == "RUNNING":
            reasons = _running(row, position)
        else:
            reasons = _pending(row, position, await presence.live(), now)
    running = status == "RUNNING" and reasons[-1].code == "leased"
    summary = "It is running." if running else reasons[0].message if reasons else "Queued."
    return Explanation(str(row["id"]), status, summary, reasons)


@routes.get("/v1/tasks/{id}/explain")
async def explain_route(request: web.Request) -> web.Response:
    principal = await require(request, "tasks:read")
    try:
        task_id = uuid.UUID(request.match_info["id"])
    except ValueError as e:
        raise ApiError(404, "not_found", "no such task") from e
    c = ctx(request)
    row = await c.store.get(task_id, principal.tenant_filter())
    if row is None:
        raise ApiError(404, "not_found", "no such task")
    found = await explain(row, UiStore(c.store.pool), WorkerPresence(c.queue.client))
    return web.Response(body=_encoder.encode(found), content_type="application/json")
