"""Build the api role's aiohttp application."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

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
Series = tuple[Any, Any]  # (requests counter child, latency histogram child)

# The labelled metric children per (method, route, status): labels() takes a lock and builds
# its key on every call, a few microseconds per request; a dict hit costs nanoseconds. Bounded
# like the metric's own children (which prometheus_client keeps forever anyway).
_series: dict[tuple[str, str, int], Series] = {}
_frozen = False


def _http_series(method: str, route: str, status: int) -> Series:
    key = (method, route, status)
    found = _series.get(key)
    if found is None:
        found = _series[key] = (
            metrics.HTTP_REQUESTS.labels(method, route, str(status)),
            metrics.HTTP_SECONDS.labels(method, route),
        )
    return found


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
        requests, seconds = _http_series(request.method, name, status)
        requests.inc()
        seconds.observe(time.perf_counter() - started)


async def _freeze_heap(app: web.Application) -> None:
    """Move what starting allocated (modules, the app, pools) out of the garbage collector's
    reach: each full collection scanned those ~70,000 objects again, an ~18 ms pause every few
    thousand requests that showed in the p99. Once per process: objects frozen are never
    collected, and whatever a later app (a test's) leaves behind must stay collectable."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()  # what is garbage already is not kept forever
        gc.freeze()


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
    app.on_startup.append(_freeze_heap)
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
