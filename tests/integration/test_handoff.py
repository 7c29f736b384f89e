"""Hand-off to idle workers (lua/_handoff.lua) against a real Redis: a due task goes straight to
a registered waiter, leased under the waiter's token, and no path leaves it unowned."""

from __future__ import annotations

import asyncio

from taskd.queue.client import Enqueue, RedisQueue, Requeue, Waiter
from taskd.queue.keys import QueueKeys
from tests.helpers import eventually
from tests.integration.test_queue_scripts import ids

LEASE_MS = 5000


async def register(queue: RedisQueue, name: str, prefix: str, idle_ms: int = 10_000) -> Waiter:
    """An idle lease loop: a lease call that finds nothing and registers."""
    leased = await queue.lease(name, 10, prefix, LEASE_MS, idle_ms=idle_ms)
    assert leased.ids == [] and leased.waiter is not None
    return leased.waiter


async def test_a_due_task_is_leased_to_the_waiter_and_pushed_to_its_inbox(
    queue: RedisQueue, queue_name: str
) -> None:
    k = QueueKeys(queue_name)
    waiter = await register(queue, queue_name, "w:1")
    waiting = asyncio.create_task(queue.wait(waiter, 5))
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 7, 0)])
    handed = await asyncio.wait_for(waiting, 5)
    assert handed is not None
    assert (handed.id, handed.token, handed.priority) == (a, "w:1:1", 7)
    assert await queue.client.get(k.lease(a)) == "w:1:1"
    assert await queue.tracked(queue_name, a) == "active"
    assert await queue.client.zcard(k.idle) == 0  # the registration is used up
    assert await queue.client.exists(waiter.inbox) == 0


async def test_without_a_waiter_the_task_stays_ready(queue: RedisQueue, queue_name: str) -> None:
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    assert await queue.tracked(queue_name, a) == "ready"


async def test_a_lapsed_registration_gets_nothing(queue: RedisQueue, queue_name: str) -> None:
    k = QueueKeys(queue_name)
    await register(queue, queue_name, "gone:1", idle_ms=1)
    [a] = ids(1)
    await eventually(lambda: _lapsed(queue, k))
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    assert await queue.tracked(queue_name, a) == "ready"
    assert await queue.client.zcard(k.idle) == 0  # removed on the way


async def _lapsed(queue: RedisQueue, k: QueueKeys) -> bool:
    seconds, micros = await queue.client.time()
    now_ms = seconds * 1000 + micros // 1000
    return bool(await queue.client.zcount(k.idle, now_ms + 1, "+inf") == 0)


async def test_one_task_per_waiter_the_best_to_the_freshest(
    queue: RedisQueue, queue_name: str
) -> None:
    older = await register(queue, queue_name, "old:1", idle_ms=5_000)
    fresher = await register(queue, queue_name, "new:1", idle_ms=9_000)
    low, high, extra = ids(3)
    await queue.enqueue(queue_name, [Enqueue(low, 0, 0), Enqueue(high, 9, 0), Enqueue(extra, 0, 0)])
    to_fresher = await queue.wait(fresher, 1)
    assert to_fresher is not None and to_fresher.id == high
    to_older = await queue.wait(older, 1)
    assert to_older is not None and to_older.id == low
    assert await queue.tracked(queue_name, extra) == "ready"


async def test_a_hand_off_after_the_wait_is_adopted_by_the_next_lease(
    queue: RedisQueue, queue_name: str
) -> None:
    """The waiter's BLPOP timed out just before the hand-off: nothing is stranded."""
    k = QueueKeys(queue_name)
    waiter = await register(queue, queue_name, "w:1")
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    leased = await queue.lease(queue_name, 10, "w:2", LEASE_MS, idle_ms=10_000, retire=waiter)
    assert leased.ids == [a] and leased.tokens == ["w:2:1"]
    assert await queue.client.get(k.lease(a)) == "w:2:1"
    assert await queue.client.exists(waiter.inbox) == 0


async def test_a_stale_hand_off_whose_lease_moved_on_is_not_adopted(
    queue: RedisQueue, queue_name: str
) -> None:
    """The unread entry's lease expired and the task was leased anew (lease keys overwrite):
    the next lease call drops the entry instead of taking the task from its new holder."""
    k = QueueKeys(queue_name)
    waiter = await register(queue, queue_name, "w:1")
    a, b = ids(2)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    await queue.client.set(k.lease(a), "other:1")  # reaped, re-queued, leased by another
    leased = await queue.lease(queue_name, 10, "w:2", LEASE_MS, idle_ms=10_000, retire=waiter)
    assert leased.ids == []
    assert await queue.client.get(k.lease(a)) == "other:1"
    assert await queue.client.exists(waiter.inbox) == 0
    # And a stopping worker's retire leaves it alone the same way.
    assert leased.waiter is not None
    await queue.enqueue(queue_name, [Enqueue(b, 0, 0)])
    await queue.client.set(k.lease(b), "other:2")
    assert await queue.retire(leased.waiter) is False
    assert await queue.client.get(k.lease(b)) == "other:2"
    assert await queue.tracked(queue_name, b) == "active"


async def test_a_lease_that_takes_some_hands_the_rest_to_waiters(
    queue: RedisQueue, queue_name: str
) -> None:
    """Delayed tasks become due in a lease call: what it does not take goes to the waiters."""
    first, second = ids(2)
    await queue.enqueue(queue_name, [Enqueue(first, 1, 50), Enqueue(second, 0, 50)])
    waiter = await register(queue, queue_name, "idle:1")

    async def busy_worker_leases_one() -> bool:
        return (await queue.lease(queue_name, 1, "busy:1", LEASE_MS)).ids == [first]

    await eventually(busy_worker_leases_one)
    handed = await queue.wait(waiter, 1)
    assert handed is not None and handed.id == second


async def test_a_new_earliest_due_time_wakes_a_waiter_without_a_task(
    queue: RedisQueue, queue_name: str
) -> None:
    waiter = await register(queue, queue_name, "w:1")
    waiting = asyncio.create_task(queue.wait(waiter, 30))
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 60_000)])
    assert await asyncio.wait_for(waiting, 5) is None  # woken long before its 30 s
    assert await queue.tracked(queue_name, a) == "delayed"


async def test_retire_puts_an_unread_hand_off_back_and_releases_the_wait(
    queue: RedisQueue, queue_name: str
) -> None:
    k = QueueKeys(queue_name)
    waiter = await register(queue, queue_name, "w:1")
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 3, 0)])
    assert await queue.client.llen(waiter.inbox) == 1
    entry = (await queue.client.lrange(waiter.inbox, 0, 0))[0]
    score = float(entry.split(" ")[1])
    assert await queue.retire(waiter) is True
    assert await queue.tracked(queue_name, a) == "ready"
    assert await queue.client.zscore(k.ready, a) == score  # its place in line is kept
    assert await queue.client.exists(k.lease(a)) == 0
    # A BLPOP still blocked on the inbox returns at once, with no task.
    assert await asyncio.wait_for(queue.wait(waiter, 30), 5) is None


async def test_retire_while_blocked_returns_the_wait(queue: RedisQueue, queue_name: str) -> None:
    waiter = await register(queue, queue_name, "w:1")
    waiting = asyncio.create_task(queue.wait(waiter, 30))
    await eventually(lambda: _blocked_on(queue, waiter))
    assert await queue.retire(waiter) is False
    assert await asyncio.wait_for(waiting, 5) is None
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    assert await queue.tracked(queue_name, a) == "ready"  # nobody is registered any more


async def _blocked_on(queue: RedisQueue, waiter: Waiter) -> bool:
    clients = await queue.client.client_list()
    return any(c.get("cmd") == "blpop" for c in clients)


async def test_a_released_task_goes_to_a_waiter(queue: RedisQueue, queue_name: str) -> None:
    """retry with delay 0 (a task released unstarted) hands the task on like enqueue does."""
    [a] = ids(1)
    await queue.enqueue(queue_name, [Enqueue(a, 0, 0)])
    assert (await queue.lease(queue_name, 1, "stopping:1", LEASE_MS)).ids == [a]
    waiter = await register(queue, queue_name, "idle:1")
    assert await queue.retry(queue_name, [Requeue(a, "stopping:1:1", 0, 0)]) == [1]
    handed = await queue.wait(waiter, 1)
    assert handed is not None and handed.id == a
    assert await queue.client.get(QueueKeys(queue_name).lease(a)) == "idle:1:1"
