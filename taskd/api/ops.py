"""/healthz, /readyz and /metrics: served by every role (the api role on its own port)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from taskd import metrics
from taskd.errors import TaskdError

Check = Callable[[], Awaitable[object]]
CHECKS: web.AppKey[dict[str, Check]] = web.AppKey("taskd_checks")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = request.app[CHECKS]
    results = await asyncio.gather(*(_probe(fn) for fn in checks.values()))
    report = dict(zip(checks, results, strict=True))
    for name, problem in report.items():
        metrics.DEPENDENCY_UP.labels(name).set(0 if problem else 1)
    failed = {k: v for k, v in report.items() if v}
    body = {
        "status": "unavailable" if failed else "ok",
        "checks": {k: (v or "ok") for k, v in report.items()},
    }
    return web.Response(
        body=msgspec.json.encode(body),
        status=503 if failed else 200,
        content_type="application/json",
    )


async def _probe(fn: Check) -> str | None:
    try:
        async with asyncio.timeout(2.0):
            await fn()
    except (TaskdError, TimeoutError, OSError) as e:
        return str(e) or type(e).__name__
    return None


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_ops_routes(app: web.Application, checks: dict[str, Check]) -> None:
    app[CHECKS] = dict(checks)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
