"""Build the api role's aiohttp application."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from taskd import metrics
from taskd.api.context import CONTEXT, ApiContext
from taskd.api.dag_routes import routes as dag_routes
from taskd.api.errors import make_error_middleware
from taskd.api.explain import routes as explain_routes
from taskd.api.openapi import docs_page, openapi_json
from taskd.api.ops import add_ops_routes
from taskd.api.routes import routes
from taskd.api.schedule_routes import routes as schedule_routes
from taskd.api.tracing import request_context

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        metrics.HTTP_REQUESTS.labels(request.method, name, str(status)).inc()
        metrics.HTTP_SECONDS.labels(request.method, name).observe(time.perf_counter() - started)


def create_app(context: ApiContext) -> web.Application:
    app = web.Application(
        client_max_size=context.settings.api.max_body_bytes,
        middlewares=[
            request_context,
            measure,
            make_error_middleware(context.settings.api.retry_after_seconds),
        ],
    )
    app[CONTEXT] = context
    app.add_routes(routes)
    app.add_routes(dag_routes)
    app.add_routes(schedule_routes)
    app.add_routes(explain_routes)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs_page)
    add_ops_routes(app, {"postgres": context.store.ping, "redis": context.queue.ping})
    if context.settings.ui.enabled:
        from taskd.ui.app import mount  # the dashboard (Jinja2) loads only when it is served

        mount(app, context)
    return app
