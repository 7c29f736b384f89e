"""The Tasks list and the Task page, with their actions and raw downloads."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from taskd.api.errors import ApiError
from taskd.api.routes import _encode_cursor, _list_filter
from taskd.ui import actions
from taskd.ui.models import task_live
from taskd.ui.render import page, render_text
from taskd.ui.security import Refused, Viewer, check_action
from taskd.ui.state import state, viewer

routes = web.RouteTableDef()
COUNT_CAP = 10_000
PAGE_SIZE = 50
FILTERS = ("status", "type", "queue", "dag_id", "label", "created_after", "created_before")


def task_id_of(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError as e:
        raise Refused(404, "No such task.") from e


def is_htmx(request: web.Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _clean_query(request: web.Request) -> list[tuple[str, str]]:
    """The list filter of the URL, without the empty fields a GET form sends."""
    return [(k, v) for k, v in request.query.items() if k in FILTERS and v.strip()]


@routes.get("/tasks", name="tasks")
async def tasks_page(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    ui = state(request)
    q = request.query.get("q", "").strip()
    if q:
        return await _lookup(request, v, q)
    filters = _clean_query(request)
    extra = [("limit", str(PAGE_SIZE))]
    if request.query.get("cursor"):
        extra.append(("cursor", request.query["cursor"]))
    probe = request.clone(rel_url=request.rel_url.with_query(filters + extra))
    try:
        f = _list_filter(probe, v.tenant)
    except ApiError as e:
        return page("tasks.html", 422, **_ctx(v, filters, [], None, 0, e.message))
    rows = await ui.api.store.list_tasks(f)
    more = len(rows) > f.limit - 1
    rows = rows[: f.limit - 1]
    cursor = _encode_cursor(rows[-1]["id"]) if more and rows else None
    total = await ui.store.count_capped(f, COUNT_CAP + 1)
    context = _ctx(v, filters, rows, cursor, total, None)
    context["notice"] = _notice(request)
    return page("tasks.html", **context)


def _notice(request: web.Request) -> str | None:
    """The outcome of a bulk action, from the URL it redirected to."""
    q = request.query
    verb = {"cancel": "Cancelled", "retry": "Retried"}.get(q.get("done", ""))
    if verb is None or not q.get("n", "").isdigit() or not q.get("of", "").isdigit():
        return None
    return f"{verb} {q['n']} of {q['of']} selected tasks (the others could not be)."


def _ctx(
    v: Viewer,
    filters: list[tuple[str, str]],
    rows: Sequence[Any],
    cursor: str | None,
    total: int,
    problem: str | None,
) -> dict[str, Any]:
    here = urlencode(filters)
    return {
        "viewer": v,
        "nav": "tasks",
        "filters": dict(filters),
        "rows": rows,
        "total": total,
        "capped": total > COUNT_CAP,
        "cap": COUNT_CAP,
        "next_url": f"/ui/tasks?{urlencode([*filters, ('cursor', cursor)])}" if cursor else None,
        "first_url": f"/ui/tasks?{here}",
        "here": f"/ui/tasks?{here}",
        "problem": problem,
        "notice": None,
        "statuses": (
            "WAITING",
            "PENDING",
            "RUNNING",
            "SUCCESS",
            "FAILED",
            "CANCELLED",
            "UPSTREAM_FAILED",
        ),
    }


async def _lookup(request: web.Request, v: Viewer, q: str) -> web.StreamResponse:
    """An id goes to its page; anything else is looked up as an idempotency key."""
    ui = state(request)
    try:
        as_id = uuid.UUID(q)
    except ValueError:
        found = await ui.store.find_by_key(q, v.tenant)
    else:
        found = [as_id] if await ui.api.store.get(as_id, v.tenant) is not None else []
    if len(found) == 1:
        raise web.HTTPSeeOther(f"/ui/tasks/{found[0]}")
    rows = [r for r in [await ui.api.store.get(i, v.tenant) for i in found] if r is not None]
    context = _ctx(v, [], rows, None, len(rows), None if rows else f"Nothing matches {q!r}.")
    return page("tasks.html", 200 if rows else 404, **context)


@routes.post("/tasks/bulk", name="tasks_bulk")
async def tasks_bulk(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    form = await request.post()
    check_action(request, v, _str(form.get("csrf")))
    action = _str(form.get("action"))
    if action not in ("cancel", "retry"):
        raise Refused(400, "Choose cancel or retry.")
    ids = []
    for raw in form.getall("id", [])[: actions.MAX_SELECTION]:
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            continue
    done = await actions.act(
        state(request), v, action, ids, audit_as=f"bulk_{action}", filter={"selection": len(ids)}
    )
    back = _str(form.get("back"))
    back = back if back.startswith("/ui/tasks") else "/ui/tasks"
    sep = "&" if "?" in back else "?"
    raise web.HTTPSeeOther(f"{back}{sep}done={action}&n={len(done.changed)}&of={done.asked}")


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


@routes.get("/tasks/{id}", name="task")
async def task_page(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    ui = state(request)
    task_id = task_id_of(request)
    live = await task_live(ui, task_id, v.tenant)
    if live is None:
        raise Refused(404, "No such task.")
    row = live.row
    context = {
        "viewer": v,
        "nav": "tasks",
        "t": live,
        "can_act": v.can_act,
        "csrf": v.csrf,
        "parents": await ui.store.parents(task_id),
        "children": await ui.store.children(task_id),
        "notes": await ui.store.notifications(task_id),
        "dlq": await ui.store.dlq_publish_state(task_id),
        "audit": await ui.store.audit_of_task(task_id),
        "payload": row["payload"],
        "result": row["result"],
        "refresh": 3 if live.live else None,
    }
    return page("task.html", **context)


@routes.get("/tasks/{id}/{part:payload|result}.json", name="task_raw")
async def task_raw(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    task_id = task_id_of(request)
    row = await state(request).api.store.get(task_id, v.tenant)
    if row is None:
        raise Refused(404, "No such task.")
    part = request.match_info["part"]
    return web.Response(
        text=json.dumps(row[part], indent=2, ensure_ascii=False),
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{task_id}-{part}.json"'},
    )


@routes.post("/tasks/{id}/{action:cancel|retry}", name="task_action")
async def task_action(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    ui = state(request)
    task_id = task_id_of(request)
    form = await request.post()
    check_action(request, v, _str(form.get("csrf")))
    action = request.match_info["action"]
    done = await actions.act(ui, v, action, [task_id])
    if not done.changed:
        current = await ui.api.store.get(task_id, v.tenant)
        if current is None:
            raise Refused(404, "No such task.")
        if not is_htmx(request):
            verb = "cancelled" if action == "cancel" else "retried"
            raise Refused(409, f"The task is {current['status']} and cannot be {verb}.")
    if is_htmx(request):
        live = await task_live(ui, task_id, v.tenant)
        if live is None:
            raise Refused(404, "No such task.")
        return web.Response(
            text=render_text("_task_live.html", t=live, can_act=v.can_act, csrf=v.csrf),
            content_type="text/html",
        )
    raise web.HTTPSeeOther(f"/ui/tasks/{task_id}")
