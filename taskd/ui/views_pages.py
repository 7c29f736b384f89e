"""Overview, DAG, Dead letters and Workers pages, and the live event stream."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from taskd.ui import actions
from taskd.ui.live import Audience, serve_stream
from taskd.ui.models import dag_model, overview, task_live
from taskd.ui.render import page, render_text
from taskd.ui.security import Refused, check_action
from taskd.ui.state import UiState, state, viewer

routes = web.RouteTableDef()
# Dead letters are grouped over the newest this many FAILED tasks.
DLQ_WINDOW = 100_000
# The Dead letters page lists this many of the newest one by one, to pick a selection from.
DLQ_LIST = 50
WORKER_TASKS_PAGE = 50


@routes.get("/", name="overview")
async def overview_page(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    o = await overview(state(request), v.tenant)
    return page("overview.html", viewer=v, nav="overview", o=o, refresh=10)


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as e:
        raise Refused(404, f"No such {what}.") from e


@routes.get("/dags/{id}", name="dag")
async def dag_page(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    m = await dag_model(state(request), _uuid(request.match_info["id"], "DAG"), v.tenant)
    if m is None:
        raise Refused(404, "No such DAG.")
    live = m.status == "RUNNING"
    return page(
        "dag.html",
        viewer=v,
        nav="tasks",
        d=m,
        can_act=v.can_act,
        csrf=v.csrf,
        refresh=3 if live else None,
    )


@routes.post("/dags/{id}/retry", name="dag_retry")
async def dag_retry(request: web.Request) -> web.StreamResponse:
    """Retry the failed part: each FAILED or CANCELLED task (its cut-off descendants wait
    again, see the redrive statement)."""
    v = viewer(request)
    ui = state(request)
    form = await request.post()
    check_action(request, v, _str(form.get("csrf")))
    dag_id = _uuid(request.match_info["id"], "DAG")
    if await ui.dags.get(dag_id, v.tenant) is None:
        raise Refused(404, "No such DAG.")
    ids = await ui.store.dag_failed(dag_id)
    await actions.act(ui, v, "retry", ids, audit_as="dag_retry", filter={"dag_id": str(dag_id)})
    raise web.HTTPSeeOther(f"/ui/dags/{dag_id}")


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


@routes.get("/dlq", name="dlq")
async def dlq_page(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    store = state(request).store
    return page(
        "dlq.html",
        viewer=v,
        nav="dlq",
        groups=await store.dlq_groups(v.tenant, DLQ_WINDOW),
        newest=await store.dlq_newest(v.tenant, DLQ_LIST),
        list_size=DLQ_LIST,
        window=DLQ_WINDOW,
        redrove=request.query.get("redrove"),
    )


def _group(form: Any) -> tuple[str, str, str]:
    group = (_str(form.get("type")), _str(form.get("error_type")), _str(form.get("pattern")))
    if not group[0]:
        raise Refused(400, "Choose a group of dead letters, or some of them.")
    return group


def _selection(form: Any) -> list[uuid.UUID]:
    ids = []
    for raw in form.getall("id", [])[: actions.MAX_SELECTION]:
        try:
            ids.append(uuid.UUID(str(raw)))
        except ValueError:
            continue
    return ids


@routes.post("/dlq/redrive", name="dlq_redrive")
async def dlq_redrive(request: web.Request) -> web.StreamResponse:
    """Redrive a group (type, error type, pattern) or a selection (``id`` fields): a dry run
    counts what the redrive would touch (of a selection, those still FAILED); the run redrives
    at most ``ui.redrive_max`` of them, newest first, paced to ``ui.redrive_per_second``."""
    v = viewer(request)
    ui = state(request)
    form = await request.post()
    check_action(request, v, _str(form.get("csrf")))
    most = ui.api.settings.ui.redrive_max
    selection = _selection(form) if "id" in form else None
    group: tuple[str, str, str] | None = None
    if selection is not None:
        ids = (await ui.store.failed_among(selection, v.tenant))[: most + 1]
        filt: dict[str, Any] = {"selection": len(selection)}
    else:
        group = _group(form)
        ids = await ui.store.dlq_group_ids(v.tenant, group, most + 1)
        filt = {"type": group[0], "error_type": group[1], "pattern": group[2]}
    if _str(form.get("mode")) != "run":
        return page(
            "dlq_confirm.html",
            viewer=v,
            nav="dlq",
            group=group,
            selected=ids[:most] if selection is not None else None,
            asked=len(selection or ()),
            count=min(len(ids), most),
            more=len(ids) > most,
            most=most,
            samples=ids[:10],
        )
    done = await actions.act(ui, v, "retry", ids[:most], audit_as="redrive", filter=filt)
    raise web.HTTPSeeOther(f"/ui/dlq?redrove={len(done.changed)}")


@routes.get("/workers", name="workers")
async def workers_page(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    workers = await state(request).presence.live()
    chosen = request.query.get("worker")
    try:
        at = max(int(request.query.get("page", "1")), 1)
    except ValueError:
        at = 1
    current = next((w for w in workers if w.id == chosen), None)
    tasks: tuple[str, ...] = ()
    if current is not None:
        tasks = current.tasks[(at - 1) * WORKER_TASKS_PAGE : at * WORKER_TASKS_PAGE]
    return page(
        "workers.html",
        viewer=v,
        nav="workers",
        workers=workers,
        current=current,
        tasks=tasks,
        at=at,
        more=current is not None and len(current.tasks) > at * WORKER_TASKS_PAGE,
    )


@routes.get("/events", name="events")
async def events(request: web.Request) -> web.StreamResponse:
    v = viewer(request)
    ui = state(request)
    topic = request.query.get("topic", "")
    if ui.hub.closed:
        raise Refused(503, "Shutting down.")
    kind, _, raw = topic.partition(":")
    if kind == "task":
        if await ui.api.store.get(_uuid(raw, "task"), v.tenant) is None:
            raise Refused(404, "No such task.")
    elif kind == "dag":
        if await ui.dags.get(_uuid(raw, "DAG"), v.tenant) is None:
            raise Refused(404, "No such DAG.")
    elif topic != "overview":
        raise Refused(404, "No such topic.")
    normal = topic if kind == "overview" else f"{kind}:{uuid.UUID(raw)}"
    return await serve_stream(request, ui.hub, ui.hub.subscribe(v, normal))


async def render_topic(ui: UiState, audience: Audience) -> str | None:
    """The live fragment of a topic for one audience (no CSRF field: htmx sends the header)."""
    topic, tenant, can_act = audience
    if topic == "overview":
        return render_text("_overview.html", o=await overview(ui, tenant))
    kind, _, raw = topic.partition(":")
    if kind == "task":
        t = await task_live(ui, uuid.UUID(raw), tenant)
        return None if t is None else render_text("_task_live.html", t=t, can_act=can_act, csrf="")
    d = await dag_model(ui, uuid.UUID(raw), tenant)
    return None if d is None else render_text("_dag_live.html", d=d, can_act=can_act, csrf="")


async def topic_versions(ui: UiState, topics: list[str]) -> dict[str, Any]:
    """One query per kind: a value per topic that changes when its tasks do."""
    tasks = [uuid.UUID(t[5:]) for t in topics if t.startswith("task:")]
    dags = [uuid.UUID(t[4:]) for t in topics if t.startswith("dag:")]
    out: dict[str, Any] = {}
    if tasks:
        out.update({f"task:{k}": v for k, v in (await ui.store.watch_tasks(tasks)).items()})
    if dags:
        out.update({f"dag:{k}": v for k, v in (await ui.store.watch_dags(dags)).items()})
    return out
