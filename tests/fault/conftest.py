from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from taskd.queue.client import RedisQueue
from taskd.store.pool import create_pool
from taskd.store.tasks import TaskStore
from tests.conftest import make_settings
from tests.fault.harness import RedisServer


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
