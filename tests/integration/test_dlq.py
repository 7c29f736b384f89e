"""Dead letters reach a real Kafka-protocol broker exactly as API.md documents, and survive
the broker being down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from taskd import TaskContext
from taskd.config.settings import DlqSettings, Settings
from taskd.dlq.kafka import KafkaSink
from taskd.errors import SinkUnavailable
from taskd.queue.client import RedisQueue
from taskd.services.dlq_publisher import DlqPublisher
from taskd.store.outbox import OutboxStore
from taskd.store.tasks import TaskStore
from tests.conftest import bearer
from tests.helpers import eventually, new_task, registry_of, running_worker, submit, wait_terminal
from tests.kafka import Broker, consume


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    b.start()
    yield b
    b.stop()


def dlq_settings(broker: Broker, topic: str) -> DlqSettings:
    return DlqSettings(
        bootstrap_servers=broker.bootstrap,
        topic=topic,
        idempotent_producer=False,
        publish_timeout_seconds=3,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
    )


async def boom(ctx: TaskContext, payload: Any) -> None:
    raise RuntimeError(f"boom on attempt {ctx.attempt}")


async def test_a_task_that_exhausts_its_retries_arrives_on_the_topic(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str, broker: Broker
) -> None:
    topic = f"dlq-{uuid.uuid4().hex[:8]}"
    [tid] = await submit(store, queue, new_task(queue_name, "t.boom", max_retries=2))
    async with running_worker(settings, store, queue, registry_of(t__boom=boom)):
        assert (await wait_terminal(store, tid))["status"] == "FAILED"
    sink = KafkaSink(dlq_settings(broker, topic))
    publisher = DlqPublisher(
        OutboxStore(store.pool), sink, dlq_settings(broker, topic), settings.retry
    )
    try:
        assert await publisher.run_once() == 1
        assert await publisher.run_once() == 0  # marked published: not sent twice
    finally:
        await sink.close()
    [record] = await consume(broker.bootstrap, topic, 1)
    assert record.key == tid.encode()
    assert dict(record.headers) == {"taskd-tenant": b"t", "taskd-type": b"t.boom"}
    doc = msgspec.json.decode(record.value)
    assert doc["event"] == "task.dead_lettered"
    task = doc["task"]
    assert (task["id"], task["status"], task["attempts"]) == (tid, "FAILED", 3)
    assert task["error"] == {
        "type": "RuntimeError",
        "message": "boom on attempt 3",
        "retryable": True,
    }
    assert [(a["attempt"], a["outcome"]) for a in task["attempt_history"]] == [
        (1, "ERROR"),
        (2, "ERROR"),
        (3, "ERROR"),
    ]
    assert set(task) >= {"type", "queue", "payload", "labels", "created_at", "finished_at"}


async def test_broker_down_the_outbox_holds_and_delivers_after_restart(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str, broker: Broker
) -> None:
    from taskd import metrics

    topic = f"dlq-{uuid.uuid4().hex[:8]}"
    s = dlq_settings(broker, topic)
    [tid] = await submit(store, queue, new_task(queue_name, "t.boom", max_retries=0))
    async with running_worker(settings, store, queue, registry_of(t__boom=boom)):
        await wait_terminal(store, tid)
    broker.stop()
    sink = KafkaSink(s)
    publisher = DlqPublisher(OutboxStore(store.pool), sink, s, settings.retry)
    try:
        with pytest.raises(SinkUnavailable):
            await publisher.run_once()
        row = await store.pool.fetchrow("SELECT * FROM dlq_outbox")
        assert row["published_at"] is None and row["publish_attempts"] == 1
        assert row["last_error"]
        assert metrics.DLQ_BACKLOG._value.get() == 1
        broker.start()  # same port, empty memory storage

        async def delivered() -> bool:
            try:
                return await publisher.run_once() == 1
            except SinkUnavailable:
                return False

        await eventually(delivered, timeout=20, interval=0.1)
        assert metrics.DLQ_BACKLOG._value.get() == 0
    finally:
        await sink.close()
    [record] = await consume(broker.bootstrap, topic, 1)
    assert record.key == tid.encode()


async def test_lost_attempts_that_spend_the_budget_are_dead_lettered_too(
    store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    from taskd.services.maintenance import Reaper
    from taskd.store.tasks import RunDefaults

    [tid] = await submit(store, queue, new_task(queue_name, max_retries=0))
    leased = await queue.lease(queue_name, 1, "dead:1", 30)
    await store.flip_running(leased.ids, leased.tokens, "dead", RunDefaults([], [], [], 3, 300.0))
    await eventually(Reaper(store, queue, 3).run_once)
    assert (await store.get(uuid.UUID(tid), None))["status"] == "FAILED"
    assert (
        await store.pool.fetchval(
            "SELECT count(*) FROM dlq_outbox WHERE task_id = $1", uuid.UUID(tid)
        )
        == 1
    )


async def test_dlq_route_lists_failed_tasks_and_redrive_dead_letters_again(
    api: TestClient[Any, Any],
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
) -> None:
    async def post(type_: str) -> str:
        resp = await api.post(
            "/v1/tasks",
            headers=bearer(),
            json={"type": type_, "queue": queue_name, "max_retries": 0},
        )
        return str((await resp.json())["id"])

    first, second, fine = await post("t.boom"), await post("t.boom"), await post("t.ok")

    async def ok(ctx: TaskContext, payload: Any) -> None:
        return None

    handlers = registry_of(t__boom=boom, t__ok=ok)
    async with running_worker(settings, store, queue, handlers):
        for tid in (first, second, fine):
            await wait_terminal(store, tid)
        page = await (await api.get("/v1/dlq?limit=1", headers=bearer())).json()
        assert [t["id"] for t in page["items"]] == [second]
        rest = await (
            await api.get(f"/v1/dlq?cursor={page['next_cursor']}", headers=bearer())
        ).json()
        assert [t["id"] for t in rest["items"]] == [first] and rest["next_cursor"] is None
        assert (await api.get("/v1/dlq", headers=bearer("mallory"))).status == 200
        other = await (await api.get("/v1/dlq", headers=bearer("mallory"))).json()
        assert other["items"] == []

        resp = await api.post(f"/v1/tasks/{first}/retry", headers=bearer())
        assert resp.status == 200
        await eventually(lambda: _attempts_of(store, first, 2))
        assert (await wait_terminal(store, first))["status"] == "FAILED"
    count = await store.pool.fetchval(
        "SELECT count(*) FROM dlq_outbox WHERE task_id = $1", uuid.UUID(first)
    )
    assert count == 2  # dead-lettered again after the redrive failed again


async def _attempts_of(store: TaskStore, tid: str, n: int) -> bool:
    row = await store.get(uuid.UUID(tid), None)
    return bool(row["attempt"] == n and row["status"] == "FAILED")


async def test_cli_lists_tails_and_redrives_in_bulk(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    broker: Broker,
    database: str,
) -> None:
    import asyncio

    from tests.integration.test_migrate_and_cli import run_cli

    topic = f"dlq-{uuid.uuid4().hex[:8]}"
    a, b, c = await submit(
        store,
        queue,
        new_task(queue_name, "t.boom", max_retries=0),
        new_task(queue_name, "t.boom", max_retries=0),
        new_task(queue_name, "t.other", max_retries=0),
    )
    async with running_worker(settings, store, queue, registry_of(t__boom=boom)):
        for tid in (a, b, c):
            await wait_terminal(store, tid)
    s = dlq_settings(broker, topic)
    sink = KafkaSink(s)
    try:
        await DlqPublisher(OutboxStore(store.pool), sink, s, settings.retry).run_once()
    finally:
        await sink.close()
    env = {
        "TASKD_DATABASE__URL": database,
        "TASKD_DLQ__BOOTSTRAP_SERVERS": broker.bootstrap,
        "TASKD_DLQ__TOPIC": topic,
        "TASKD_REDIS__URL": settings.redis.url,
    }

    listed = await asyncio.to_thread(run_cli, "dlq", "list", "--filter", "type=t.boom", **env)
    assert listed.returncode == 0, listed.stderr
    assert a in listed.stdout and b in listed.stdout and c not in listed.stdout
    tailed = await asyncio.to_thread(
        run_cli, "dlq", "tail", "--from-beginning", "--max", "3", **env
    )
    assert tailed.returncode == 0, tailed.stderr
    docs = [msgspec.json.decode(line) for line in tailed.stdout.splitlines()]
    assert {d["key"] for d in docs} == {a, b, c}
    assert {d["event"] for d in docs} == {"task.dead_lettered"}

    dry = await asyncio.to_thread(
        run_cli, "dlq", "retry", "--filter", "type=t.boom", "--dry-run", **env
    )
    assert "would redrive 2" in dry.stdout
    assert await store.pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'FAILED'") == 3
    done = await asyncio.to_thread(run_cli, "dlq", "retry", "--filter", "type=t.boom", **env)
    assert "redrove 2 of 2" in done.stdout, done.stdout + done.stderr
    statuses = {
        str(r["id"]): r["status"] for r in await store.pool.fetch("SELECT id, status FROM tasks")
    }
    assert statuses == {a: "PENDING", b: "PENDING", c: "FAILED"}
    assert await queue.tracked(queue_name, a) == "ready"
    bad = await asyncio.to_thread(run_cli, "dlq", "list", "--filter", "colour=red", **env)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
