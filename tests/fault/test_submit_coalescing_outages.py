"""Outages while coalesced submissions wait: each waiting request gets its own right answer.

Concurrent POST /v1/tasks share INSERTs and enqueue calls (taskd.api.coalesce). Postgres lost
while they wait: every one answers 503 with Retry-After and nothing is stored. Redis lost while
they wait: every one is accepted (201), because each row was committed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from taskd.api.app import create_app
from taskd.api.auth import Authenticator
from taskd.api.context import ApiContext
from taskd.api.submit import SubmitService
from taskd.queue.client import RedisQueue
from taskd.store.pool import create_pool
from taskd.store.tasks import TaskStore
from tests.conftest import bearer, make_settings
from tests.fault.harness import RedisServer
from tests.fault.proxy import FaultProxy
from tests.fault.test_outages import via
from tests.helpers import eventually

N = 200


@pytest.fixture
async def api(
    database: str, redis_server: RedisServer, pg_proxy: FaultProxy, redis_proxy: FaultProxy
) -> AsyncIterator[tuple[TestClient[Any, Any], SubmitService]]:
    """The API through both proxies, with timeouts long enough that requests wait for the test
    to cut the connections (a timeout would answer them on its own)."""
    settings = make_settings(
        via(database, pg_proxy),
        via(redis_server.url, redis_proxy),
        redis={"socket_timeout": 60, "connect_timeout": 60},
        database={"connect_timeout": 60, "statement_timeout": 60},
    )
    pool = await create_pool(settings.database)
    store = TaskStore(pool)
    queue = RedisQueue.from_url(settings.redis.url, socket_timeout=60, connect_timeout=60)
    auth = Authenticator(settings.auth)
    service = SubmitService(store, queue, settings)
    context = ApiContext(settings, store, queue, auth, service)
    # No connection limit: all N requests reach the server at once.
    client = TestClient(TestServer(create_app(context)), connector=aiohttp.TCPConnector(limit=0))
    await client.start_server()
    yield client, service
    await client.close()
    await auth.close()
    await queue.close()
    await pool.close()


async def burst(client: TestClient[Any, Any], queue_name: str) -> list[asyncio.Task[Any]]:
    async def one(i: int) -> tuple[int, dict[str, str], Any]:
        body = {"type": "fault.work", "queue": queue_name, "payload": {"i": i}}
        resp = await client.post("/v1/tasks", json=body, headers=bearer())
        return resp.status, dict(resp.headers), await resp.json()

    return [asyncio.create_task(one(i)) for i in range(N)]


async def all_waiting(service: SubmitService) -> bool:
    return service.waiting == N


async def test_postgres_lost_while_submissions_wait_is_503_for_each_and_stores_nothing(
    api: tuple[TestClient[Any, Any], SubmitService],
    pg_proxy: FaultProxy,
    fstore: TaskStore,
    queue_name: str,
) -> None:
    client, service = api
    pg_proxy.blackhole()  # the first INSERTs hang unanswered; the rest queue behind them
    requests = await burst(client, queue_name)
    await eventually(lambda: all_waiting(service), timeout=30)
    pg_proxy.refuse()
    pg_proxy.reset_all()  # Postgres is gone: the flushes in flight and every later one fail
    answers = await asyncio.gather(*requests)
    assert Counter(status for status, _, _ in answers) == {503: N}
    for _, headers, body in answers:
        assert headers["Retry-After"].isdigit()
        assert body["error"]["code"] == "unavailable"
    pg_proxy.heal()
    assert await fstore.pool.fetchval("SELECT count(*) FROM tasks") == 0  # nothing half-stored
    resp = await client.post(
        "/v1/tasks", headers=bearer(), json={"type": "fault.work", "queue": queue_name}
    )
    assert resp.status == 201  # and the API recovers with Postgres


async def test_redis_lost_while_submissions_wait_accepts_each_committed_task(
    api: tuple[TestClient[Any, Any], SubmitService],
    redis_proxy: FaultProxy,
    fstore: TaskStore,
    fqueue: RedisQueue,
    queue_name: str,
) -> None:
    client, service = api
    redis_proxy.blackhole()  # the rows commit, then the enqueue calls hang
    requests = await burst(client, queue_name)
    await eventually(lambda: all_waiting(service), timeout=30)
    redis_proxy.refuse()
    redis_proxy.reset_all()
    answers = await asyncio.gather(*requests)
    assert Counter(status for status, _, _ in answers) == {201: N}
    ids = {body["id"] for _, _, body in answers}
    stored = await fstore.pool.fetch("SELECT id::text AS id, status FROM tasks")
    assert {r["id"] for r in stored} == ids and {r["status"] for r in stored} == {"PENDING"}
    redis_proxy.heal()
    resp = await client.post(
        "/v1/tasks", headers=bearer(), json={"type": "fault.work", "queue": queue_name}
    )
    assert resp.status == 201
    # Only the task submitted after the outage is queued; the reconcile queues the others.
    assert (await fqueue.depth(queue_name)).ready == 1
