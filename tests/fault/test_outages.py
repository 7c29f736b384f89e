"""Postgres and Redis outages and bad networks between taskd and them (DESIGN §6)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
from tests.fault.checker import check_run
from tests.fault.harness import RedisServer, Taskd, processes, role_env
from tests.fault.proxy import FaultProxy
from tests.helpers import eventually, new_task, submit


def via(url: str, proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def progress(store: TaskStore, n: int) -> bool:
    done = await store.pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'SUCCESS'")
    return int(done) >= n


async def settled(store: TaskStore) -> bool:
    left = await store.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE status IN ('PENDING', 'RUNNING')"
    )
    return int(left) == 0


async def run_through_outage(
    store: TaskStore,
    queue: RedisQueue,
    env: dict[str, str],
    queue_name: str,
    exec_log: Path,
    outage: Any,
    heal: Any,
    n: int = 150,
) -> tuple[list[Taskd], list[str]]:
    accepted = await submit(
        store,
        queue,
        *[
            new_task(queue_name, "fault.work", max_retries=5, payload={"seconds": 0.2})
            for _ in range(n)
        ],
    )
    with processes() as procs:
        procs.append(Taskd(["promoter"], env, "promoter").start())
        procs.append(Taskd(["worker"], env, "worker").start())
        await eventually(lambda: progress(store, 20), timeout=20)
        outage()
        await asyncio.sleep(3)  # the outage itself lasts a while: this is the fault, not a wait
        heal()
        await eventually(lambda: settled(store), timeout=60, interval=0.1)
    report = await check_run(store.pool, accepted, exec_log)
    assert report.problems == []
    assert report.succeeded == n
    return procs, accepted


async def test_postgres_outage_mid_run(
    database: str,
    redis_server: RedisServer,
    pg_proxy: FaultProxy,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(
        via(database, pg_proxy),
        redis_server.url,
        queue_name,
        exec_log,
        WORKER__CONCURRENCY="10",
        DATABASE__CONNECT_TIMEOUT="1",
    )

    def down() -> None:
        pg_proxy.refuse()
        pg_proxy.reset_all()

    procs, _ = await run_through_outage(
        fstore, fqueue, env, queue_name, exec_log, down, pg_proxy.heal
    )
    worker_log = procs[1].log()
    assert "Traceback" not in worker_log
    assert worker_log.count("cannot record outcomes") <= 2, worker_log


async def test_redis_outage_mid_run(
    database: str,
    redis_server: RedisServer,
    redis_proxy: FaultProxy,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(
        database,
        via(redis_server.url, redis_proxy),
        queue_name,
        exec_log,
        WORKER__CONCURRENCY="10",
        REDIS__SOCKET_TIMEOUT="1",
        REDIS__CONNECT_TIMEOUT="1",
    )

    def down() -> None:
        redis_proxy.refuse()
        redis_proxy.reset_all()

    procs, _ = await run_through_outage(
        fstore, fqueue, env, queue_name, exec_log, down, redis_proxy.heal
    )
    assert "Traceback" not in procs[1].log()


async def test_redis_partition_mid_run(
    database: str,
    redis_server: RedisServer,
    redis_proxy: FaultProxy,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(
        database,
        via(redis_server.url, redis_proxy),
        queue_name,
        exec_log,
        WORKER__CONCURRENCY="10",
        REDIS__SOCKET_TIMEOUT="1",
        REDIS__CONNECT_TIMEOUT="1",
    )
    await run_through_outage(
        fstore, fqueue, env, queue_name, exec_log, redis_proxy.blackhole, redis_proxy.heal
    )


async def test_slow_network_to_postgres(
    database: str,
    redis_server: RedisServer,
    pg_proxy: FaultProxy,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(
        via(database, pg_proxy), redis_server.url, queue_name, exec_log, WORKER__CONCURRENCY="20"
    )
    pg_proxy.set_latency(0.02)
    await run_through_outage(
        fstore,
        fqueue,
        env,
        queue_name,
        exec_log,
        lambda: pg_proxy.set_latency(0.1),
        pg_proxy.heal,
        n=100,
    )


async def test_postgres_connections_killed_mid_run(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(
        database,
        redis_server.url,
        queue_name,
        exec_log,
        WORKER__CONCURRENCY="10",
        DATABASE__APPLICATION_NAME="taskd-victim",
    )
    dbname = urlsplit(database).path.lstrip("/")
    kill = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = $1 AND application_name = 'taskd-victim'"
    )
    admin = await create_pool(make_settings(database).database)
    try:

        async def killer() -> int:
            killed = 0
            for _ in range(5):
                await asyncio.sleep(0.5)  # the fault's cadence, not a synchronisation
                killed += await admin.fetchval(kill, dbname)
            return killed

        accepted = await submit(
            fstore,
            fqueue,
            *[
                new_task(queue_name, "fault.work", max_retries=5, payload={"seconds": 0.1})
                for _ in range(150)
            ],
        )
        with processes() as procs:
            procs.append(Taskd(["promoter"], env, "promoter").start())
            procs.append(Taskd(["worker"], env, "worker").start())
            assert await killer() >= 5
            await eventually(lambda: settled(fstore), timeout=60, interval=0.1)
    finally:
        await admin.close()
    report = await check_run(fstore.pool, accepted, exec_log)
    assert report.problems == [] and report.succeeded == 150


@pytest.fixture
async def proxied_api(
    database: str, redis_server: RedisServer, pg_proxy: FaultProxy, redis_proxy: FaultProxy
) -> AsyncIterator[TestClient[Any, Any]]:
    settings = make_settings(
        via(database, pg_proxy),
        via(redis_server.url, redis_proxy),
        redis={"socket_timeout": 1, "connect_timeout": 1},
        database={"connect_timeout": 1, "statement_timeout": 2},
    )
    pool = await create_pool(settings.database)
    store = TaskStore(pool)
    queue = RedisQueue.from_url(settings.redis.url, socket_timeout=1, connect_timeout=1)
    auth = Authenticator(settings.auth)
    context = ApiContext(settings, store, queue, auth, SubmitService(store, queue, settings))
    client = TestClient(TestServer(create_app(context)))
    await client.start_server()
    yield client
    await client.close()
    await auth.close()
    await queue.close()
    await pool.close()


async def test_submit_while_redis_is_down_is_accepted_and_runs_later(
    proxied_api: TestClient[Any, Any],
    database: str,
    redis_server: RedisServer,
    redis_proxy: FaultProxy,
    fstore: TaskStore,
    exec_log: Path,
    queue_name: str,
) -> None:
    redis_proxy.refuse()
    redis_proxy.reset_all()
    resp = await proxied_api.post(
        "/v1/tasks",
        headers=bearer(),
        json={"type": "fault.work", "queue": queue_name, "payload": {"seconds": 0}},
    )
    assert resp.status == 201
    tid = (await resp.json())["id"]
    ready = await proxied_api.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["postgres"] == "ok"
    redis_proxy.heal()
    env = role_env(database, redis_server.url, queue_name, exec_log)
    with processes() as procs:
        procs.append(Taskd(["promoter"], env, "promoter").start())
        procs.append(Taskd(["worker"], env, "worker").start())
        await eventually(lambda: settled(fstore), timeout=30, interval=0.1)
    row = await fstore.get(uuid.UUID(tid), None)
    assert row["status"] == "SUCCESS"


async def test_submit_while_postgres_is_down_is_503_and_stores_nothing(
    proxied_api: TestClient[Any, Any],
    pg_proxy: FaultProxy,
    fstore: TaskStore,
    queue_name: str,
) -> None:
    pg_proxy.refuse()
    pg_proxy.reset_all()
    resp = await proxied_api.post(
        "/v1/tasks", headers=bearer(), json={"type": "fault.work", "queue": queue_name}
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    body = await resp.json()
    assert body["error"]["code"] == "unavailable"
    ready = await proxied_api.get("/readyz")
    assert ready.status == 503
    pg_proxy.heal()
    assert await fstore.pool.fetchval("SELECT count(*) FROM tasks") == 0
    resp = await proxied_api.post(
        "/v1/tasks", headers=bearer(), json={"type": "fault.work", "queue": queue_name}
    )
    assert resp.status == 201
