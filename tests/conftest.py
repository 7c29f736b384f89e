"""Fixtures that start real services: a database per test, Redis with random queue names."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from taskd.api.app import create_app
from taskd.api.auth import Authenticator, mint_token
from taskd.api.context import ApiContext
from taskd.api.submit import SubmitService
from taskd.config.loader import build
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.store.migrate import migrate
from taskd.store.pool import create_pool
from taskd.store.tasks import TaskStore

ADMIN_URL = os.environ.get("TASKD_TEST_DATABASE__URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TASKD_TEST_REDIS__URL", "redis://127.0.0.1:6379/0")
SECRET = "test-secret-" + "x" * 32


def db_url(name: str) -> str:
    base = ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """One migrated database per test session, cloned for every test that needs one."""
    import asyncio

    name = f"taskd_tpl_{os.getpid()}"

    async def create() -> None:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(db_url(name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def database(template_db: str) -> AsyncIterator[str]:
    """A fresh migrated database for this test; yields its URL."""
    name = f"taskd_t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await admin.close()
    yield db_url(name)
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def make_settings(database_url: str, redis_url: str = REDIS_URL, **sections: Any) -> Settings:
    data: dict[str, Any] = {
        "database": {"url": database_url, "min_connections": 1, "max_connections": 10},
        "redis": {"url": redis_url},
        "auth": {"jwt_secret": SECRET},
        "worker": {"lease_seconds": 5, "idle_wait_seconds": 0.5, "shutdown_grace_seconds": 5},
        "retry": {"backoff": {"base": 0.05, "factor": 2, "max": 1, "jitter": "none"}},
        "promoter": {"reconcile_grace_seconds": 0, "interval_seconds": 0.1},
        "log": {"json": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return build(data)


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(database: str, queue_name: str) -> Settings:
    s = make_settings(database)
    w = msgspec.structs.replace(s.worker, queues=(queue_name,))
    return msgspec.structs.replace(s, worker=w)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[TaskStore]:
    pool = await create_pool(settings.database)
    yield TaskStore(pool)
    await pool.close()


@pytest.fixture
async def queue() -> AsyncIterator[RedisQueue]:
    q = RedisQueue.from_url(REDIS_URL)
    yield q
    await q.close()


@pytest.fixture
async def api(
    settings: Settings, store: TaskStore, queue: RedisQueue
) -> AsyncIterator[TestClient[Any, Any]]:
    """A real HTTP server on loopback running the api role's application."""
    auth = Authenticator(settings.auth)
    context = ApiContext(settings, store, queue, auth, SubmitService(store, queue, settings))
    client = TestClient(TestServer(create_app(context)))
    await client.start_server()
    yield client
    await client.close()
    await auth.close()


def token(
    sub: str = "alice",
    *,
    tenant: str | None = None,
    scopes: tuple[str, ...] = ("tasks:read", "tasks:write"),
) -> str:
    return mint_token(SECRET, sub, tenant=tenant, scopes=scopes)


def bearer(sub: str = "alice", **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **kw)}"}
