"""Retry backoff: pure policy, no I/O."""

from __future__ import annotations

import random
from enum import StrEnum

import msgspec


class Jitter(StrEnum):
    FULL = "full"
    NONE = "none"


class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``delay = min(max, base * factor ** (attempt - 1))``, optionally with full jitter."""

    base: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: Jitter = Jitter.FULL

    def ceiling(self, attempt: int) -> float:
        """The delay before retrying after failed attempt ``attempt`` (1-based), before jitter."""
        if self.base <= 0:
            return 0.0
        if self.factor <= 1:
            return min(self.max, self.base)
        # Grow step by step and stop at the cap: factor ** 10_000 would overflow a float, and
        # attempt numbers keep counting across redrives.
        limit = self.max / self.base
        grown = 1.0
        for _ in range(max(attempt - 1, 0)):
            grown *= self.factor
            if grown >= limit:
                return self.max
        return min(self.max, self.base * grown)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay in seconds; with full jitter, uniform in ``[0, ceiling]``."""
        top = self.ceiling(attempt)
        if self.jitter is Jitter.NONE:
            return top
        return (rng or random).uniform(0.0, top)
