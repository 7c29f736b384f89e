"""A resizable pool of execution slots shared by a worker's lease loops."""

from __future__ import annotations

import asyncio


class Slots:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.closed = False
        self._freed = asyncio.Event()

    @property
    def free(self) -> int:
        return max(self.capacity - self.used, 0)

    async def take(self, most: int) -> int:
        """Wait until a slot is free, then take up to ``most`` of the free ones.

        Returns 0 only once the pool is closed (the worker is stopping).
        """
        while not self.closed:
            waited = False
            while self.free == 0 and not self.closed:
                self._freed.clear()
                await self._freed.wait()
                waited = True
            if waited:
                # Slots come back one handler at a time: let the other handlers that finished
                # in this loop iteration return theirs too, so the next lease is a batch, not a
                # trickle. Another waiter may take them meanwhile: then wait again (returning 0
                # here would read as "closed" and end the caller's lease loop).
                await asyncio.sleep(0)
            n = self.try_take(most)
            if n > 0:
                return n
        return 0

    def try_take(self, most: int) -> int:
        """Take up to ``most`` of the free slots without waiting (0 when none is free)."""
        if self.closed:
            return 0
        n = min(most, self.free)
        self.used += n
        return n

    def give(self, n: int) -> None:
        if n <= 0:
            return
        self.used -= n
        # Wake every waiting lease loop: without this a loop parked on a full pool never
        # learns that slots came back (shared/PERF.md, item 3).
        self._freed.set()

    def close(self) -> None:
        """Release every waiter: no more slots will be handed out."""
        self.closed = True
        self._freed.set()

    def resize(self, capacity: int) -> None:
        """Grow or shrink; running tasks keep their slots, shrinking takes effect as they end."""
        self.capacity = capacity
        self._freed.set()
