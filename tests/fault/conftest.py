from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from taskd.queue.client import RedisQueue
from taskd.store.pool import create_pool
from taskd.store.tasks import TaskStore
from tests.conftest import make_settings
from tests.fault.harness import RedisServer
from tests.fault.proxy import FaultProxy


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def exec_log(tmp_path: Path) -> Path:
    return tmp_path / "executions.log"


@pytest.fixture
async def fstore(database: str) -> AsyncIterator[TaskStore]:
    pool = await create_pool(make_settings(database).database)
    yield TaskStore(pool)
    await pool.close()


@pytest.fixture
async def fqueue(redis_server: RedisServer) -> AsyncIterator[RedisQueue]:
    q = RedisQueue.from_url(redis_server.url)
    yield q
    await q.close()


@pytest.fixture
def pg_proxy(database: str) -> Iterator[FaultProxy]:
    parts = urlsplit(database)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", redis_server.port) as proxy:
        yield proxy
