"""Properties of the retry backoff policy (taskd/backoff.py): pure, so hypothesis drives it."""

from __future__ import annotations

import math
import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskd.backoff import Backoff, Jitter

bases = st.floats(min_value=1e-6, max_value=1e4, allow_nan=False, allow_infinity=False)
factors = st.floats(min_value=1.0, max_value=100.0, allow_nan=False, allow_infinity=False)
maxima = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=1, max_value=5_000)
jitters = st.sampled_from(list(Jitter))


@st.composite
def policies(draw: st.DrawFn, jitter: st.SearchStrategy[Jitter] = jitters) -> Backoff:
    return Backoff(base=draw(bases), factor=draw(factors), max=draw(maxima), jitter=draw(jitter))


@given(policies(), attempts, st.integers(min_value=0, max_value=2**32))
def test_delay_is_never_negative_nor_over_the_maximum(b: Backoff, attempt: int, seed: int) -> None:
    delay = b.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= b.max
    assert delay <= b.ceiling(attempt)


@given(policies(), attempts)
def test_ceiling_never_shrinks_as_attempts_grow(b: Backoff, attempt: int) -> None:
    assert b.ceiling(attempt) <= b.ceiling(attempt + 1)


@given(policies(st.just(Jitter.NONE)), st.integers(min_value=1, max_value=60))
def test_without_jitter_the_delay_is_the_formula(b: Backoff, attempt: int) -> None:
    expected = min(b.max, b.base * b.factor ** (attempt - 1))
    assert b.delay(attempt) == pytest.approx(expected, rel=1e-9)
    assert b.delay(attempt) == b.ceiling(attempt)  # and it does not vary


@pytest.mark.parametrize("attempt", [1_000, 10**6, 10**9, 2**63])
@pytest.mark.parametrize("factor", [1.5, 2.0, 100.0])
def test_huge_attempts_do_not_overflow(attempt: int, factor: float) -> None:
    b = Backoff(base=0.5, factor=factor, max=300.0, jitter=Jitter.NONE)
    assert b.delay(attempt) == 300.0
    full = msgspec.structs.replace(b, jitter=Jitter.FULL)
    assert 0.0 <= full.delay(attempt, random.Random(1)) <= 300.0


def test_factor_one_is_constant() -> None:
    b = Backoff(base=7.0, factor=1.0, max=300.0, jitter=Jitter.NONE)
    assert {b.delay(a) for a in [1, 2, 50, 10**9]} == {7.0}


def test_attempts_below_one_count_as_the_first() -> None:
    b = Backoff(base=2.0, factor=3.0, max=300.0, jitter=Jitter.NONE)
    assert b.ceiling(0) == b.ceiling(-5) == b.ceiling(1) == 2.0
    assert b.ceiling(2) == 6.0


def test_zero_maximum_means_no_wait() -> None:
    b = Backoff(base=5.0, factor=2.0, max=0.0)
    assert b.delay(3, random.Random(0)) == 0.0


@pytest.mark.parametrize("attempt", [1, 2, 100, 1_000])
def test_zero_base_means_no_wait(attempt: int) -> None:
    b = msgspec.convert({"base": 0, "factor": 2, "max": 10, "jitter": "none"}, Backoff)
    assert b.delay(attempt) == 0.0


def test_zero_base_with_huge_attempts_does_not_overflow() -> None:
    # Attempt numbers keep counting across redrives, so a worker can reach such numbers.
    b = msgspec.convert({"base": 0, "factor": 2, "max": 10, "jitter": "none"}, Backoff)
    assert b.delay(1_100) == 0.0


def test_full_jitter_spreads_over_the_whole_range() -> None:
    b = Backoff(base=1.0, factor=2.0, max=100.0, jitter=Jitter.FULL)
    rng = random.Random(42)
    delays = [b.delay(4, rng) for _ in range(2_000)]  # ceiling 8
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 0.5 and max(delays) > 7.5
    assert math.isclose(sum(delays) / len(delays), 4.0, rel_tol=0.1)


def test_seeded_jitter_is_reproducible() -> None:
    b = Backoff(base=1.0, factor=2.0, max=100.0)
    assert b.delay(5, random.Random(7)) == b.delay(5, random.Random(7))


def test_unknown_fields_and_bad_jitter_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"base": 1, "speed": 2}, Backoff)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"jitter": "half"}, Backoff)
