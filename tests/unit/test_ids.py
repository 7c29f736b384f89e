"""Time-ordered task ids (taskd/ids.py): UUID version 7, RFC 9562 layout."""

from __future__ import annotations

import time
import uuid

from hypothesis import given
from hypothesis import strategies as st

from taskd.ids import uuid7


def millis(u: uuid.UUID) -> int:
    return u.int >> 80


def test_version_and_variant() -> None:
    for _ in range(1_000):
        u = uuid7()
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert uuid.UUID(str(u)) == u


def test_timestamp_is_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    u = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= millis(u) <= after + 5


def test_ids_made_one_after_another_sort_in_creation_order() -> None:
    made = [uuid7() for _ in range(10_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert [str(u) for u in made] == sorted(str(u) for u in made)  # text sorts the same way


@given(st.lists(st.integers(min_value=1, max_value=10**9), min_size=2, max_size=50, unique=True))
def test_ids_sort_by_their_time(offsets: list[int]) -> None:
    # Times in the past only: an id from the future would move this process's clock forward.
    now = time.time_ns() // 1_000_000
    stamps = sorted(now - 10**9 - 1 + o for o in offsets)
    made = [uuid7(now_ms=ms) for ms in stamps]
    assert made == sorted(made)
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in made)


def test_random_bits_differ() -> None:
    ms = time.time_ns() // 1_000_000
    low_bits = {uuid7(now_ms=ms).int & ((1 << 62) - 1) for _ in range(100)}
    assert len(low_bits) == 100
