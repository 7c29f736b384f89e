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
        exponent = max(attempt - 1, 0)
        # Clamp the exponent first: factor ** 10_000 would overflow a float.
        if self.factor > 1 and self.base > 0:
            limit = self.max / self.base
            grown = 1.0
            for _ in range(exponent):
                grown *= self.factor
                if grown >= limit:
                    return self.max
            return min(self.max, self.base * grown)
        return min(self.max, self.base * (self.factor**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay in seconds; with full jitter, uniform in ``[0, ceiling]``."""
        top = self.ceiling(attempt)
        if self.jitter is Jitter.NONE:
            return top
        return (rng or random).uniform(0.0, top)
