"""The RabbitMQ sink against the machine's own RabbitMQ: what it declares, what it does when the
broker does not confirm, and a `taskd dlq tail` that takes nothing from the queue."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import msgspec
import pytest

from taskd.config.settings import DlqSettings, Settings
from taskd.dlq.base import DeadLetter
from taskd.dlq.factory import make_sink
from taskd.dlq.rabbitmq import RabbitMqSink
from taskd.errors import ConfigError, SinkUnavailable
from taskd.queue.client import RedisQueue
from taskd.services.dlq_publisher import DlqPublisher
from taskd.store.outbox import OutboxStore
from taskd.store.tasks import TaskStore
from tests.fault.proxy import FaultProxy
from tests.helpers import eventually
from tests.integration.test_dlq import (
    RABBITMQ_HOST,
    RABBITMQ_PORT,
    RabbitNames,
    dead_letters,
    outbox_row,
    rabbitmq_url,
    rabbitmqctl,
)


@pytest.fixture
async def names() -> AsyncIterator[RabbitNames]:
    n = RabbitNames.unique()
    yield n
    await n.drop()


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(RABBITMQ_HOST, RABBITMQ_PORT) as p:
        yield p


@contextlib.asynccontextmanager
async def publisher_for(
    store: TaskStore, settings: Settings, dlq: DlqSettings
) -> AsyncIterator[tuple[DlqPublisher, RabbitMqSink]]:
    sink = RabbitMqSink(dlq)
    try:
        yield DlqPublisher(OutboxStore(store.pool), sink, dlq, settings.retry), sink
    finally:
        await sink.close()


async def delivered(publisher: DlqPublisher) -> bool:
    try:
        return await publisher.run_once() == 1
    except SinkUnavailable:
        return False


def _by_name(rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["name"] == name), None)


async def test_declares_a_durable_exchange_and_queue_bound_with_the_routing_key(
    names: RabbitNames,
) -> None:
    sink = make_sink(names.settings())
    assert isinstance(sink, RabbitMqSink)
    try:
        await sink.start()
        exchanges = await asyncio.to_thread(
            rabbitmqctl, "list_exchanges", "name", "type", "durable"
        )
        queues = await asyncio.to_thread(rabbitmqctl, "list_queues", "name", "durable")
        bindings = await asyncio.to_thread(
            rabbitmqctl, "list_bindings", "source_name", "destination_name", "routing_key"
        )
    finally:
        await sink.close()
    assert _by_name(exchanges, names.exchange) == {
        "name": names.exchange,
        "type": "direct",
        "durable": True,
    }
    assert _by_name(queues, names.queue) == {"name": names.queue, "durable": True}
    assert {
        "source_name": names.exchange,
        "destination_name": names.queue,
        "routing_key": names.routing_key,
    } in bindings


async def test_a_nacked_publish_is_retried_until_the_broker_confirms(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    names: RabbitNames,
) -> None:
    """A full queue with overflow reject-publish makes the broker answer Basic.Nack."""
    [tid] = await dead_letters(settings, store, queue, queue_name)
    policy = f"full-{names.queue}"
    async with publisher_for(store, settings, names.settings()) as (publisher, sink):
        await sink.start()  # the queue exists: the policy applies to it
        await asyncio.to_thread(
            rabbitmqctl,
            "set_policy",
            "--apply-to",
            "queues",
            policy,
            f"^{names.queue.replace('.', '[.]')}$",
            '{"max-length": 0, "overflow": "reject-publish"}',
        )
        try:

            async def policy_is(name: str) -> bool:
                rows = await asyncio.to_thread(rabbitmqctl, "list_queues", "name", "policy")
                row = _by_name(rows, names.queue)
                return row is not None and row["policy"] == name

            await eventually(lambda: policy_is(policy), timeout=30, interval=0.2)
            with pytest.raises(SinkUnavailable, match="Nack"):
                await publisher.run_once()
            row = await outbox_row(store)
            assert row["published_at"] is None and row["publish_attempts"] == 1
            assert "Nack" in row["last_error"]
        finally:
            await asyncio.to_thread(rabbitmqctl, "clear_policy", policy)
        await eventually(lambda: policy_is(""), timeout=30, interval=0.2)
        await eventually(lambda: delivered(publisher), timeout=20, interval=0.05)
    [msg] = await names.take(1)
    assert msg.message_id == tid
    assert (await outbox_row(store))["publish_attempts"] == 2  # nacked once, then confirmed
    assert await names.waiting() == 0


async def test_an_exchange_deleted_under_the_sink_fails_the_pass_and_is_declared_again(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    names: RabbitNames,
) -> None:
    [tid] = await dead_letters(settings, store, queue, queue_name)
    async with publisher_for(store, settings, names.settings()) as (publisher, sink):
        await sink.start()
        async with await aio_pika.connect(rabbitmq_url()) as conn:
            await (await conn.channel()).exchange_delete(names.exchange)
        with pytest.raises(SinkUnavailable, match="NOT_FOUND"):
            await publisher.run_once()  # the broker closes the channel: nothing confirmed
        assert (await outbox_row(store))["published_at"] is None
        await eventually(lambda: delivered(publisher), timeout=20, interval=0.05)
    [msg] = await names.take(1)
    assert msg.message_id == tid


async def test_a_queue_deleted_by_hand_is_declared_again_before_the_next_publish(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    names: RabbitNames,
) -> None:
    """Each pass re-asserts the queue and its binding: the message lands in the queue, not
    nowhere (nor only in someone's tail)."""
    [tid] = await dead_letters(settings, store, queue, queue_name)
    async with publisher_for(store, settings, names.settings()) as (publisher, sink):
        await sink.start()
        async with await aio_pika.connect(rabbitmq_url()) as conn:
            await (await conn.channel()).queue_delete(names.queue)
        assert await publisher.run_once() == 1
    [msg] = await names.take(1)
    assert msg.message_id == tid


async def test_no_confirmation_within_the_timeout_is_retried(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    names: RabbitNames,
    proxy: FaultProxy,
) -> None:
    """A partition after connecting: the publish is never confirmed, the row waits."""
    [tid] = await dead_letters(settings, store, queue, queue_name)
    dlq = names.settings(rabbitmq_url(proxy.port), publish_timeout_seconds=1)
    async with publisher_for(store, settings, dlq) as (publisher, sink):
        await sink.start()
        proxy.blackhole()
        with pytest.raises(SinkUnavailable, match="did not confirm within 1"):
            await publisher.run_once()
        assert await names.waiting() == 0
        proxy.heal()
        await eventually(lambda: delivered(publisher), timeout=20, interval=0.05)
    [msg] = await names.take(1)
    assert msg.message_id == tid
    row = await outbox_row(store)
    assert row["published_at"] is not None and row["publish_attempts"] == 2


async def test_connection_cut_mid_batch_loses_nothing(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    names: RabbitNames,
    proxy: FaultProxy,
) -> None:
    """Connections reset again and again while a batch publishes: every dead letter arrives,
    some perhaps twice (the message id dedupes)."""
    ids = await dead_letters(settings, store, queue, queue_name, 30)
    dlq = names.settings(rabbitmq_url(proxy.port), batch_size=5)
    async with publisher_for(store, settings, dlq) as (publisher, _):

        async def drained() -> bool:
            with contextlib.suppress(SinkUnavailable):
                await publisher.run_once()
            proxy.reset_all()  # cut whatever is open after each pass
            return int(await publisher.outbox.backlog()) == 0

        await eventually(drained, timeout=30, interval=0.01)
    got = await names.take(len(ids), keys=set(ids))
    assert {m.message_id for m in got} == set(ids)


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ConfigError, match="rabbitmq_exchange"):
        make_sink(DlqSettings(sink="rabbitmq", rabbitmq_exchange=""))
    with pytest.raises(ConfigError, match="kafka, rabbitmq or none"):
        make_sink(DlqSettings(sink="sqs"))
    assert make_sink(DlqSettings(sink="none")) is None


async def test_an_unreachable_broker_is_named_without_its_password(proxy: FaultProxy) -> None:
    proxy.refuse()
    url = f"amqp://taskd:s3cret@127.0.0.1:{proxy.port}/"
    sink = RabbitMqSink(DlqSettings(sink="rabbitmq", rabbitmq_url=url, publish_timeout_seconds=2))
    letter = DeadLetter("0190e0e0-0000-7000-8000-000000000000", b"{}", ())
    with pytest.raises(SinkUnavailable) as info:
        await sink.publish([letter])
    assert "s3cret" not in str(info.value) and "taskd:***@127.0.0.1" in str(info.value)
    await sink.close()


async def _published(store: TaskStore, settings: Settings, dlq: DlqSettings) -> int:
    async with publisher_for(store, settings, dlq) as (publisher, _):
        return await publisher.run_once()


async def test_tail_from_beginning_stops_early_and_puts_everything_back(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    database: str,
    names: RabbitNames,
) -> None:
    from tests.integration.test_migrate_and_cli import run_cli

    ids = await dead_letters(settings, store, queue, queue_name, 3)
    assert await _published(store, settings, names.settings()) == 3
    env = {"TASKD_DATABASE__URL": database, **names.env()}
    tailed = await asyncio.to_thread(
        run_cli, "dlq", "tail", "--from-beginning", "--max", "1", **env
    )
    assert tailed.returncode == 0, tailed.stderr
    [doc] = [msgspec.json.decode(line) for line in tailed.stdout.splitlines()]
    assert doc["key"] in ids and doc["event"] == "task.dead_lettered"
    assert await names.waiting() == 3  # the two it did not show and the one it did: all back
    got = await names.take(3)
    assert {m.message_id for m in got} == set(ids)


async def test_tail_follows_new_dead_letters_on_a_private_queue(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    database: str,
    names: RabbitNames,
) -> None:
    import os

    from tests.integration.test_migrate_and_cli import ROOT

    env = {**os.environ, "TASKD_DATABASE__URL": database, **names.env()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "taskd", "dlq", "tail", "--max", "1"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(30):
            line = await proc.stderr.readline()
        assert b"following exchange" in line, line  # bound: from here on it gets a copy
        [tid] = await dead_letters(settings, store, queue, queue_name)
        assert await _published(store, settings, names.settings()) == 1
        async with asyncio.timeout(30):
            out = await proc.stdout.readline()
            assert await proc.wait() == 0
        doc = msgspec.json.decode(out)
        assert (doc["key"], doc["task"]["id"]) == (tid, tid)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    [msg] = await names.take(1)  # the queue's consumers still get it
    assert msg.message_id == tid
