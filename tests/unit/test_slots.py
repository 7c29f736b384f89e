"""The worker's slot pool: waiters that lose a race for a freed slot keep waiting."""

from __future__ import annotations

import asyncio

from taskd.services.slots import Slots


async def test_a_waiter_that_loses_the_race_waits_again_instead_of_returning_0() -> None:
    """Two lease loops wait on a full pool of one; one slot comes back. The loser must keep
    waiting: a 0 reads as "closed" and used to end its lease loop for good."""
    slots = Slots(1)
    assert await slots.take(10) == 1
    first = asyncio.create_task(slots.take(10))
    second = asyncio.create_task(slots.take(10))
    await asyncio.sleep(0)  # both are parked on the full pool
    slots.give(1)
    done, pending = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
    assert [t.result() for t in done] == [1]
    assert len(pending) == 1
    loser = pending.pop()
    await asyncio.sleep(0.01)
    assert not loser.done()
    slots.give(1)
    assert await asyncio.wait_for(loser, 1) == 1


async def test_close_releases_every_waiter_with_0() -> None:
    slots = Slots(1)
    assert await slots.take(1) == 1
    waiter = asyncio.create_task(slots.take(1))
    await asyncio.sleep(0)
    slots.close()
    assert await asyncio.wait_for(waiter, 1) == 0
    assert slots.try_take(1) == 0


async def test_try_take_takes_what_is_free_without_waiting() -> None:
    slots = Slots(3)
    assert slots.try_take(2) == 2
    assert slots.try_take(5) == 1
    assert slots.try_take(1) == 0
    slots.give(3)
    assert slots.free == 3
