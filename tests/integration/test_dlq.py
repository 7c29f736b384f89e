"""Dead letters reach a real broker exactly as API.md documents, and survive the broker being
down. The contract tests run once per sink: Kafka (tansu, tests/kafka.py) and RabbitMQ (the
machine's own, 127.0.0.1:5672, reached through a FaultProxy the test controls)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import msgspec
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity
from aiohttp.test_utils import TestClient

from taskd import TaskContext
from taskd.config.settings import DlqSettings, Settings
from taskd.dlq.factory import make_sink
from taskd.errors import SinkUnavailable
from taskd.queue.client import RedisQueue
from taskd.services.dlq_publisher import DlqPublisher
from taskd.store.outbox import OutboxStore
from taskd.store.tasks import TaskStore
from tests.conftest import bearer
from tests.fault.proxy import FaultProxy
from tests.helpers import eventually, new_task, registry_of, running_worker, submit, wait_terminal
from tests.kafka import Broker, consume

RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672


def rabbitmq_url(port: int = RABBITMQ_PORT) -> str:
    return f"amqp://guest:guest@{RABBITMQ_HOST}:{port}/"


def quick(**kw: Any) -> DlqSettings:
    """Short timeouts and backoff, so outage tests take seconds."""
    base: dict[str, Any] = {
        "idempotent_producer": False,
        "publish_timeout_seconds": 3,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
    }
    return DlqSettings(**(base | kw))


def dlq_settings(broker: Broker, topic: str) -> DlqSettings:
    return quick(bootstrap_servers=broker.bootstrap, topic=topic)


# --- RabbitMQ helpers: unique names per test, read the queue directly (not via the proxy) ---


@dataclass(frozen=True)
class RabbitNames:
    exchange: str
    queue: str
    routing_key: str

    @classmethod
    def unique(cls) -> RabbitNames:
        tag = uuid.uuid4().hex[:10]
        return cls(f"test.dlq.x-{tag}", f"test.dlq.q-{tag}", f"dead-{tag}")

    def settings(self, url: str = rabbitmq_url(), **kw: Any) -> DlqSettings:
        return quick(
            sink="rabbitmq",
            rabbitmq_url=url,
            rabbitmq_exchange=self.exchange,
            rabbitmq_queue=self.queue,
            rabbitmq_routing_key=self.routing_key,
            **kw,
        )

    def env(self, url: str = rabbitmq_url()) -> dict[str, str]:
        return {
            "TASKD_DLQ__SINK": "rabbitmq",
            "TASKD_DLQ__RABBITMQ_URL": url,
            "TASKD_DLQ__RABBITMQ_EXCHANGE": self.exchange,
            "TASKD_DLQ__RABBITMQ_QUEUE": self.queue,
            "TASKD_DLQ__RABBITMQ_ROUTING_KEY": self.routing_key,
        }

    async def drop(self) -> None:
        async with await aio_pika.connect(rabbitmq_url()) as conn:
            channel = await conn.channel()
            await channel.queue_delete(self.queue)
            await channel.exchange_delete(self.exchange)

    async def waiting(self) -> int:
        """Messages ready in the queue (0 when it does not exist)."""
        async with await aio_pika.connect(rabbitmq_url()) as conn:
            channel = await conn.channel()
            try:
                queue = await channel.declare_queue(self.queue, passive=True)
            except ChannelNotFoundEntity:
                return 0
            result = queue.declaration_result
            return int(result.message_count or 0) if result is not None else 0

    async def take(
        self, count: int, timeout: float = 20, keys: set[str] | None = None
    ) -> list[AbstractIncomingMessage]:
        """Take (ack) messages until ``count`` (and every key of ``keys``) have arrived."""
        got: list[AbstractIncomingMessage] = []
        async with await aio_pika.connect(rabbitmq_url()) as conn:
            channel = await conn.channel()

            async def enough() -> bool:
                queue = await channel.declare_queue(self.queue, passive=True)
                while (msg := await queue.get(no_ack=True, fail=False)) is not None:
                    got.append(msg)
                return len(got) >= count and (not keys or keys <= {m.message_id for m in got})

            await eventually(enough, timeout=timeout, interval=0.05)
        return got


def rabbitmqctl(*args: str) -> Any:
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args, "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout) if out.stdout.strip() else []


# --- the sinks under test, behind one interface for the contract tests ----------------------


@dataclass(frozen=True)
class Received:
    """A message as a consumer of either sink sees it."""

    key: str | None
    headers: dict[str, str]
    doc: Any
    properties: dict[str, Any] = field(default_factory=dict)  # RabbitMQ's message properties


class KafkaUnderTest:
    name = "kafka"

    def __init__(self) -> None:
        self.broker = Broker()
        self.topic = f"dlq-{uuid.uuid4().hex[:8]}"
        self.broker.start()
        self.settings = dlq_settings(self.broker, self.topic)

    def env(self) -> dict[str, str]:
        return {
            "TASKD_DLQ__BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "TASKD_DLQ__TOPIC": self.topic,
        }

    async def received(self, count: int) -> list[Received]:
        return [
            Received(
                r.key.decode() if r.key else None,
                {k: v.decode() for k, v in r.headers},
                msgspec.json.decode(r.value),
            )
            for r in await consume(self.broker.bootstrap, self.topic, count)
        ]

    def cut(self) -> None:
        self.broker.stop()

    def restore(self) -> None:
        self.broker.start()  # same port, empty memory storage

    async def close(self) -> None:
        self.broker.stop()


class RabbitMqUnderTest:
    """The machine's RabbitMQ through a FaultProxy: the sink connects to the proxy."""

    name = "rabbitmq"

    def __init__(self) -> None:
        self.names = RabbitNames.unique()
        self.proxy = FaultProxy(RABBITMQ_HOST, RABBITMQ_PORT)
        self.proxy.start()
        self.settings = self.names.settings(rabbitmq_url(self.proxy.port))

    def env(self) -> dict[str, str]:
        return self.names.env()

    async def received(self, count: int) -> list[Received]:
        return [
            Received(
                m.message_id,
                {k: str(v) for k, v in m.headers.items()},
                msgspec.json.decode(m.body),
                {"content_type": m.content_type, "delivery_mode": int(m.delivery_mode or 0)},
            )
            for m in await self.names.take(count)
        ]

    def cut(self) -> None:
        self.proxy.refuse()
        self.proxy.reset_all()

    def restore(self) -> None:
        self.proxy.heal()

    async def close(self) -> None:
        try:
            self.proxy.stop()
        finally:
            await self.names.drop()


SinkUnderTest = KafkaUnderTest | RabbitMqUnderTest


@pytest.fixture(params=["kafka", "rabbitmq"])
async def sut(request: pytest.FixtureRequest) -> Any:
    s: SinkUnderTest = KafkaUnderTest() if request.param == "kafka" else RabbitMqUnderTest()
    yield s
    await s.close()


async def boom(ctx: TaskContext, payload: Any) -> None:
    raise RuntimeError(f"boom on attempt {ctx.attempt}")


async def dead_letters(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str, n: int = 1
) -> list[str]:
    """``n`` tasks that failed for good, each with one row in the outbox."""
    tasks = [new_task(queue_name, "t.boom", max_retries=0) for _ in range(n)]
    ids = await submit(store, queue, *tasks)
    async with running_worker(settings, store, queue, registry_of(t__boom=boom)):
        for tid in ids:
            await wait_terminal(store, tid)
    return ids


async def outbox_row(store: TaskStore) -> Any:
    return await store.pool.fetchrow("SELECT * FROM dlq_outbox")


# --- the contract, for both sinks -----------------------------------------------------------


async def test_a_task_that_exhausts_its_retries_arrives_as_documented(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str, sut: SinkUnderTest
) -> None:
    [tid] = await submit(store, queue, new_task(queue_name, "t.boom", max_retries=2))
    async with running_worker(settings, store, queue, registry_of(t__boom=boom)):
        assert (await wait_terminal(store, tid))["status"] == "FAILED"
    sink = make_sink(sut.settings)
    assert sink is not None
    publisher = DlqPublisher(OutboxStore(store.pool), sink, sut.settings, settings.retry)
    try:
        assert await publisher.run_once() == 1
        assert await publisher.run_once() == 0  # marked published: not sent twice
    finally:
        await sink.close()
    [message] = await sut.received(1)
    assert message.key == tid  # Kafka: the record key; RabbitMQ: message_id
    assert message.headers == {"taskd-tenant": "t", "taskd-type": "t.boom"}
    if sut.name == "rabbitmq":
        assert message.properties == {"content_type": "application/json", "delivery_mode": 2}
    doc = message.doc
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


async def test_sink_down_the_outbox_holds_and_delivers_after_restore(
    settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str, sut: SinkUnderTest
) -> None:
    from taskd import metrics

    [tid] = await dead_letters(settings, store, queue, queue_name)
    sink = make_sink(sut.settings)
    assert sink is not None
    publisher = DlqPublisher(OutboxStore(store.pool), sink, sut.settings, settings.retry)
    await sink.start()  # connected, then the connection is cut under it
    sut.cut()
    try:
        with pytest.raises(SinkUnavailable):
            await publisher.run_once()
        row = await outbox_row(store)
        assert row["published_at"] is None and row["publish_attempts"] == 1
        assert row["last_error"]
        assert metrics.DLQ_BACKLOG._value.get() == 1

        async def failed_again() -> bool:
            with contextlib.suppress(SinkUnavailable):
                await publisher.run_once()  # 0 while the row backs off
            return int((await outbox_row(store))["publish_attempts"]) >= 2

        await eventually(failed_again, timeout=20, interval=0.05)  # waits, and keeps trying
        assert (await outbox_row(store))["published_at"] is None
        sut.restore()

        async def delivered() -> bool:
            try:
                return await publisher.run_once() == 1
            except SinkUnavailable:
                return False

        await eventually(delivered, timeout=20, interval=0.1)
        assert metrics.DLQ_BACKLOG._value.get() == 0
    finally:
        await sink.close()
    [message] = await sut.received(1)
    assert message.key == tid


async def test_cli_tail_reads_the_configured_sink_and_takes_nothing_away(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    database: str,
    sut: SinkUnderTest,
) -> None:
    from tests.integration.test_migrate_and_cli import run_cli

    ids = await dead_letters(settings, store, queue, queue_name, 3)
    sink = make_sink(sut.settings)
    assert sink is not None
    try:
        assert (
            await DlqPublisher(
                OutboxStore(store.pool), sink, sut.settings, settings.retry
            ).run_once()
            == 3
        )
    finally:
        await sink.close()
    env = {"TASKD_DATABASE__URL": database, **sut.env()}
    tailed = await asyncio.to_thread(
        run_cli, "dlq", "tail", "--from-beginning", "--max", "3", **env
    )
    assert tailed.returncode == 0, tailed.stderr
    docs = [msgspec.json.decode(line) for line in tailed.stdout.splitlines()]
    assert {d["key"] for d in docs} == set(ids)
    assert {d["event"] for d in docs} == {"task.dead_lettered"}
    assert {d["task"]["id"] for d in docs} == set(ids)
    # The tail is a reader, not a consumer: the sink's own consumers still get all of it.
    assert {m.key for m in await sut.received(3)} == set(ids)


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


async def test_cli_lists_and_redrives_in_bulk(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    database: str,
) -> None:
    from tests.integration.test_migrate_and_cli import run_cli

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
    env = {"TASKD_DATABASE__URL": database, "TASKD_REDIS__URL": settings.redis.url}

    listed = await asyncio.to_thread(run_cli, "dlq", "list", "--filter", "type=t.boom", **env)
    assert listed.returncode == 0, listed.stderr
    assert a in listed.stdout and b in listed.stdout and c not in listed.stdout
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
