"""The Lua scripts against a real Redis: ordering, delays, leases, tokens, reaping."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from taskd.queue.client import Enqueue, RedisQueue, Requeue
from taskd.queue.keys import QueueKeys


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


async def test_priority_first_then_fifo(queue: RedisQueue, queue_name: str) -> None:
    a, b, c, d = ids(4)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    await queue.enqueue(queue_name, [Enqueue(b, 5, 0)])
    await queue.enqueue(queue_name, [Enqueue(c, 0, 0)])
    await queue.enqueue(queue_name, [Enqueue(d, 5, 0)])
    leased = await queue.lease(queue_name, 10, "w:1", 5000)
    assert leased.ids == [b, d, a, c]
    assert leased.tokens == ["w:1:1", "w:1:2", "w:1:3", "w:1:4"]


async def test_priority_bounds_order(queue: RedisQueue, queue_name: str) -> None:
    low, high, mid = ids(3)
    await queue.enqueue(
        queue_name, [Enqueue(low, -100, 0), Enqueue(high, 100, 0), Enqueue(mid, 0, 0)]
    )
    assert (await queue.lease(queue_name, 3, "w:1", 5000)).ids == [high, mid, low]


async def test_enqueue_is_idempotent_and_skips_held(queue: RedisQueue, queue_name: str) -> None:
    [a] = ids(1)
    assert await queue.enqueue(queue_name, [Enqueue(a, 0, 0)]) == 1
    assert await queue.enqueue(queue_name, [Enqueue(a, 0, 0)]) == 0
    await queue.lease(queue_name, 1, "w:1", 5000)
    assert await queue.enqueue(queue_name, [Enqueue(a, 0, 0)]) == 0
    assert await queue.tracked(queue_name, a) == "active"


async def test_delayed_is_not_leased_early(queue: RedisQueue, queue_name: str) -> None:
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 300)])
    first = await queue.lease(queue_name, 1, "w:1", 5000)
    assert first.ids == []
    assert 0 < first.wait_ms <= 300
    await asyncio.sleep(first.wait_ms / 1000)
    deadline = time.monotonic() + 2
    while not (got := await queue.lease(queue_name, 1, "w:2", 5000)).ids:
        assert time.monotonic() < deadline
        await asyncio.sleep(got.wait_ms / 1000)
    assert got.ids == [a]


async def test_delayed_keeps_priority_when_due(queue: RedisQueue, queue_name: str) -> None:
    low, high = ids(2)
    await queue.enqueue(queue_name, [Enqueue(low, 0, 0), Enqueue(high, 9, -1)])
    assert (await queue.lease(queue_name, 2, "w:1", 5000)).ids == [high, low]


async def test_extend_checks_token_and_restores_missing(queue: RedisQueue, queue_name: str) -> None:
    a, b = ids(2)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0), Enqueue(b, 0, 0)])
    leased = await queue.lease(queue_name, 2, "w:1", 5000)
    k = QueueKeys(queue_name)
    await queue.client.delete(k.lease(b))  # Redis "lost" this lease
    codes = await queue.extend(queue_name, [(a, "w:1:1"), (b, "w:1:2")], 5000)
    assert codes == [1, 2]
    assert await queue.client.get(k.lease(b)) == leased.tokens[1]
    assert await queue.extend(queue_name, [(a, "other:1:1")], 5000) == [0]


async def test_ack_leaves_another_holders_lease(queue: RedisQueue, queue_name: str) -> None:
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    await queue.lease(queue_name, 1, "w:1", 5000)
    assert await queue.ack(queue_name, [(a, "stale:9:1")]) == [0]
    assert await queue.tracked(queue_name, a) == "active"
    assert await queue.ack(queue_name, [(a, "w:1:1")]) == [1]
    assert await queue.tracked(queue_name, a) is None
    assert await queue.client.exists(QueueKeys(queue_name).lease(a)) == 0


async def test_retry_moves_to_delayed_and_release_to_ready(
    queue: RedisQueue, queue_name: str
) -> None:
    a, b = ids(2)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0), Enqueue(b, 0, 0)])
    await queue.lease(queue_name, 2, "w:1", 5000)
    codes = await queue.retry(
        queue_name, [Requeue(a, "w:1:1", 0, 60_000), Requeue(b, "w:1:2", 0, 0)]
    )
    assert codes == [1, 1]
    assert await queue.tracked(queue_name, a) == "delayed"
    assert await queue.tracked(queue_name, b) == "ready"


async def test_reap_returns_expired_leases_with_tokens(queue: RedisQueue, queue_name: str) -> None:
    a, b = ids(2)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0), Enqueue(b, 0, 0)])
    await queue.lease(queue_name, 1, "w:1", 50)
    await queue.lease(queue_name, 1, "w:2", 60_000)
    deadline = time.monotonic() + 2
    while not (reaped := await queue.reap(queue_name, 10)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert reaped == [(a, "w:1:1")]
    assert await queue.tracked(queue_name, a) is None  # the promoter re-queues after Postgres
    assert await queue.tracked(queue_name, b) == "active"


async def test_lease_overwrites_a_stale_restored_lease(queue: RedisQueue, queue_name: str) -> None:
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    await queue.lease(queue_name, 1, "old:1", 5000)
    # Reaped and re-queued, then the stale holder's heartbeat restores its lease key.
    await queue.client.delete(QueueKeys(queue_name).lease(a))
    await queue.client.zrem(QueueKeys(queue_name).active, a)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    assert await queue.extend(queue_name, [(a, "old:1:1")], 5000) == [2]
    got = await queue.lease(queue_name, 1, "new:1", 5000)
    assert got.ids == [a]
    assert await queue.extend(queue_name, [(a, "old:1:1")], 5000) == [0]
    assert await queue.extend(queue_name, [(a, "new:1:1")], 5000) == [1]


async def test_scripts_survive_script_flush(queue: RedisQueue, queue_name: str) -> None:
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    await queue.client.script_flush()
    assert (await queue.lease(queue_name, 1, "w:1", 5000)).ids == [a]


@pytest.mark.parametrize("name", ["enqueue", "lease", "extend", "ack", "retry", "reap", "retire"])
def test_every_script_documents_its_keys_and_args(name: str) -> None:
    from taskd.queue.scripts import read_source

    src = read_source(name)
    assert "KEYS[1]" in src and "ARGV" in src and "Returns" in src
