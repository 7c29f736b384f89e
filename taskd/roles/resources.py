"""Connections every role needs, opened with a clear message when a dependency is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from taskd.api.ops import Check, add_ops_routes
from taskd.config.live import LiveConfig
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.store.pool import create_pool
from taskd.store.tasks import TaskStore


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    store: TaskStore
    queue: RedisQueue
    # The reloadable configuration: roles subscribe what they apply at runtime (DESIGN §7).
    live: LiveConfig

    def checks(self) -> dict[str, Check]:
        return {"postgres": self.store.ping, "redis": self.queue.ping}


@asynccontextmanager
async def open_resources(
    settings: Settings, live: LiveConfig | None = None
) -> AsyncIterator[Resources]:
    pool = await create_pool(settings.database)
    r = settings.redis
    queue = RedisQueue.from_url(
        r.url, socket_timeout=r.socket_timeout, connect_timeout=r.connect_timeout
    )
    try:
        yield Resources(settings, pool, TaskStore(pool), queue, live or LiveConfig.fixed(settings))
    finally:
        await queue.close()
        await pool.close()


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


def ops_app(resources: Resources) -> web.Application:
    app = web.Application()
    add_ops_routes(app, resources.checks())
    return app
