"""The dashboard as an aiohttp sub-application mounted at ``/ui`` by the api role."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from taskd.api.context import ApiContext
from taskd.api.errors import ApiError
from taskd.errors import DependencyUnavailable
from taskd.queue.presence import WorkerPresence
from taskd.queue.sessions import SessionStore
from taskd.store.dags import DagStore
from taskd.store.ui import UiStore
from taskd.ui import views_pages, views_tasks
from taskd.ui.live import LiveHub
from taskd.ui.render import STATIC, page
from taskd.ui.security import Refused, UiAuth, add_security_headers, same_origin
from taskd.ui.state import UI, VIEWER, Pacer, UiState, state

log = logging.getLogger("taskd.ui")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
routes = web.RouteTableDef()
PUBLIC = ("/ui/login", "/ui/static/")


def _error(request: web.Request, status: int, message: str) -> web.StreamResponse:
    if status == 401 and request.method == "GET" and request.headers.get("HX-Request") != "true":
        nxt = quote(request.path_qs, safe="")
        raise web.HTTPSeeOther(f"/ui/login?next={nxt}")
    viewer = request.get(VIEWER)
    return page("error.html", status, viewer=viewer, nav="", code=status, message=message)


@web.middleware
async def ui_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if not request.path.startswith(PUBLIC):
            found = await state(request).auth.viewer(request)
            if found is None:
                raise Refused(401, "Sign in first.")
            request[VIEWER] = found
        return await handler(request)
    except Refused as e:
        return _error(request, e.status, e.message)
    except ApiError as e:
        return _error(request, e.status, e.message)
    except DependencyUnavailable as e:
        log.warning("dashboard answering 503: %s", e)
        return _error(request, 503, f"A dependency is unavailable: {e}. Try again shortly.")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(request, e.status, e.reason)


def _next(raw: str) -> str:
    """Only a dashboard path may follow sign-in (no open redirect)."""
    ok = raw.startswith("/ui/") and not raw.startswith("//") and "\\" not in raw
    return raw if ok else "/ui/"


@routes.get("/login", name="login")
async def login_page(request: web.Request) -> web.StreamResponse:
    return page(
        "login.html",
        viewer=None,
        nav="",
        ticket=request.query.get("ticket", "")[:200],
        next=_next(request.query.get("next", "/ui/")),
        problem=None,
    )


@routes.post("/login", name="login_post")
async def login(request: web.Request) -> web.StreamResponse:
    if not same_origin(request):
        raise Refused(403, "Refused: the sign-in did not come from this dashboard (Origin).")
    ui = state(request)
    form = await request.post()
    nxt = _next(str(form.get("next", "/ui/")))
    ticket = str(form.get("ticket", "")).strip()
    token = str(form.get("token", "")).strip()
    try:
        if ticket:
            found = await ui.auth.sessions.take_ticket(ticket)
            if found is None:
                raise Refused(401, "That sign-in link was used already or has expired.")
            token = found
        if not token:
            raise Refused(401, "Paste a token to sign in.")
        cookie, ttl = await ui.auth.sign_in(token)
    except Refused as e:
        return page(
            "login.html", e.status, viewer=None, nav="", ticket="", next=nxt, problem=e.message
        )
    response = web.HTTPSeeOther(nxt)
    ui.auth.set_cookie(request, response, cookie, ttl)
    raise response


@routes.post("/logout", name="logout")
async def logout(request: web.Request) -> web.StreamResponse:
    if not same_origin(request):
        raise Refused(403, "Refused: the request did not come from this dashboard (Origin).")
    await state(request).auth.sign_out(request)
    response = web.HTTPSeeOther("/ui/login")
    response.del_cookie("taskd_session", path="/ui")
    raise response


async def _redirect_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/ui/")


def mount(app: web.Application, context: ApiContext) -> None:
    """Serve the dashboard at /ui on ``app`` (the api role's application)."""
    ui = web.Application(middlewares=[ui_middleware])
    store = UiStore(context.store.pool)
    hub = LiveHub(
        render=lambda audience: views_pages.render_topic(ui_state, audience),
        versions=lambda topics: views_pages.topic_versions(ui_state, topics),
        interval=context.settings.ui.live_interval_seconds,
    )
    ui_state = UiState(
        api=context,
        auth=UiAuth(context.settings.ui, context.auth, SessionStore(context.queue.client)),
        store=store,
        dags=DagStore(context.store),
        presence=WorkerPresence(context.queue.client),
        pacer=Pacer(context.settings.ui.redrive_per_second),
        hub=hub,
    )
    ui[UI] = ui_state
    ui.add_routes(routes)
    ui.add_routes(views_pages.routes)
    ui.add_routes(views_tasks.routes)
    ui.router.add_static("/static", Path(str(STATIC)), name="static")
    ui.cleanup_ctx.append(_poller(hub))
    ui.on_shutdown.append(_end_streams(hub))
    app.add_subapp("/ui", ui)
    app.router.add_get("/ui", _redirect_root)
    app.on_response_prepare.append(add_security_headers)


def _poller(hub: LiveHub) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.run(), name="ui live poller")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def _end_streams(hub: LiveHub) -> Callable[[web.Application], Awaitable[None]]:
    async def end(app: web.Application) -> None:
        # Without this, aiohttp waits for open event streams at shutdown (28 s measured).
        hub.close()

    return end
