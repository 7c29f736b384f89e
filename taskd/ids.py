"""Time-ordered task ids (UUID version 7, RFC 9562)."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# rand_b comes from os.urandom read 4 KiB at a time: a system call per id was 15-18 % of the
# api's CPU on batch submits (bench/README.md). The bytes are the same quality, only buffered.
_RANDOM_CHUNK = 4096
_random = b""
_random_at = 0


def _random_bits() -> int:
    """64 random bits; the caller holds ``_lock``."""
    global _random, _random_at
    if _random_at + 8 > len(_random):
        _random, _random_at = os.urandom(_RANDOM_CHUNK), 0
    value = int.from_bytes(_random[_random_at : _random_at + 8], "big")
    _random_at += 8
    return value


def _next_stamp(now_ms: int) -> tuple[int, int, int]:
    """Milliseconds and a 12-bit counter that strictly increase within this process, and 64
    random bits.

    RFC 9562 §6.2 method 1: ids made in the same millisecond count up in ``rand_a``, so ids
    sort in creation order. Redis breaks score ties by member, so this keeps FIFO exact for
    tasks submitted in the same millisecond.
    """
    global _last_ms, _counter
    with _lock:
        if now_ms > _last_ms:
            _last_ms, _counter = now_ms, int.from_bytes(os.urandom(1), "big")  # random start
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms, _counter = _last_ms + 1, 0
        return _last_ms, _counter, _random_bits()


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, a 12-bit sequence, 62 random bits."""
    ms, seq, random_bits = _next_stamp(time.time_ns() // 1_000_000 if now_ms is None else now_ms)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= seq << 64  # rand_a used as a counter
    value |= 0b10 << 62  # variant
    value |= random_bits & ((1 << 62) - 1)  # rand_b
    return uuid.UUID(int=value)
