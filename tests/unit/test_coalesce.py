"""taskd.api.coalesce: batching concurrent calls, with no timer and per-caller outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from taskd.api.coalesce import Coalescer


class Recorder:
    """A flush that records its batches and, when gated, holds each batch until released."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.gated = gated
        self.entered = asyncio.Queue[list[int]]()
        self.gates: list[asyncio.Event] = []

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        batch = list(items)
        self.batches.append(batch)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        gate = asyncio.Event()
        self.gates.append(gate)
        self.entered.put_nowait(batch)
        try:
            if self.gated:
                await gate.wait()
            return [ValueError(i) if i < 0 else i * 10 for i in batch]
        finally:
            self.in_flight -= 1

    async def next_batch(self) -> list[int]:
        async with asyncio.timeout(5):
            return await self.entered.get()


async def waiting(c: Coalescer[int, int], n: int) -> None:
    """Let the event loop run the started calls until ``n`` callers wait on ``c``."""
    for _ in range(1000):
        if c.waiting >= n:
            return
        await asyncio.sleep(0)  # one turn of the loop, not a wait for time to pass
    raise AssertionError(f"{c.waiting} callers wait, not {n}")


async def test_a_lone_call_is_flushed_at_once() -> None:
    flush = Recorder()
    c = Coalescer(flush)
    async with asyncio.timeout(5):  # no timer to wait for: a deadline only guards the test
        assert await c.submit(1) == 10
    assert flush.batches == [[1]]


async def test_calls_made_during_a_flush_share_the_next_one() -> None:
    flush = Recorder(gated=True)
    c = Coalescer(flush, max_in_flight=2)
    first = asyncio.create_task(c.submit(1))
    assert await flush.next_batch() == [1]
    second = asyncio.create_task(c.submit(2))  # a second flusher is free: it goes at once
    assert await flush.next_batch() == [2]
    rest = [asyncio.create_task(c.submit(i)) for i in range(3, 9)]
    await waiting(c, 8)
    assert flush.entered.empty()  # both flushers are busy: the six wait in the queue
    flush.gates[0].set()
    assert await flush.next_batch() == [3, 4, 5, 6, 7, 8]  # everything queued, in order
    for gate in flush.gates:
        gate.set()
    assert await asyncio.gather(first, second, *rest) == [i * 10 for i in range(1, 9)]
    assert flush.most_in_flight == 2


async def test_a_batch_takes_at_most_max_items() -> None:
    flush = Recorder(gated=True)
    c = Coalescer(flush, max_items=3, max_in_flight=1)
    first = asyncio.create_task(c.submit(0))
    await flush.next_batch()
    others = [asyncio.create_task(c.submit(i)) for i in range(1, 8)]
    await waiting(c, 8)
    flush.gated = False
    flush.gates[0].set()
    await asyncio.gather(first, *others)
    assert flush.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]


async def test_each_caller_gets_its_own_outcome() -> None:
    flush = Recorder(gated=True)
    c = Coalescer(flush, max_in_flight=1)
    blocker = asyncio.create_task(c.submit(100))
    await flush.next_batch()
    calls = [asyncio.create_task(c.submit(i)) for i in (1, -2, 3, -4)]
    await waiting(c, 5)
    flush.gated = False
    flush.gates[0].set()
    outcomes = await asyncio.gather(blocker, *calls, return_exceptions=True)
    assert flush.batches[1] == [1, -2, 3, -4]  # one batch, two failures in it
    assert outcomes[0] == 1000 and outcomes[1] == 10 and outcomes[3] == 30
    assert isinstance(outcomes[2], ValueError) and outcomes[2].args == (-2,)
    assert isinstance(outcomes[4], ValueError) and outcomes[4].args == (-4,)


async def test_a_failed_flush_fails_its_batch_and_not_the_next() -> None:
    calls = 0

    async def flush(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return list(items)

    c = Coalescer(flush, max_in_flight=1)
    first = [asyncio.create_task(c.submit(i)) for i in range(3)]
    outcomes = await asyncio.gather(*first, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert await c.submit(7) == 7


async def test_a_caller_cancelled_before_its_flush_is_left_out() -> None:
    flush = Recorder(gated=True)
    c = Coalescer(flush, max_in_flight=1)
    blocker = asyncio.create_task(c.submit(1))
    await flush.next_batch()
    gone = asyncio.create_task(c.submit(2))
    kept = asyncio.create_task(c.submit(3))
    await waiting(c, 3)
    gone.cancel()
    flush.gated = False
    flush.gates[0].set()
    assert [await blocker, await kept] == [10, 30]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert flush.batches == [[1], [3]]


async def test_a_caller_cancelled_during_its_flush_does_not_disturb_the_others() -> None:
    flush = Recorder(gated=True)
    c = Coalescer(flush, max_in_flight=1)
    blocker = asyncio.create_task(c.submit(1))
    await flush.next_batch()
    a, b = asyncio.create_task(c.submit(2)), asyncio.create_task(c.submit(3))
    await waiting(c, 3)
    flush.gates[0].set()
    assert await flush.next_batch() == [2, 3]
    a.cancel()
    flush.gates[1].set()
    assert [await blocker, await b] == [10, 30]
    with pytest.raises(asyncio.CancelledError):
        await a
    assert c.waiting == 0
