"""Catch-up and overlap decisions (taskd/schedule/policy.py), exactly and as properties."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskd.schedule.cron import InvalidSchedule
from taskd.schedule.policy import (
    CAUGHT_UP,
    ENQUEUED,
    MISSED,
    SKIPPED_OVERLAP,
    Action,
    Decision,
    Policy,
    Timeliness,
    decide,
    jitter_seconds,
)
from taskd.schedule.timing import Timing, build_timing

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
TIMELY = Timeliness(lead=5, grace=30)


def minutely() -> Timing:
    return build_timing(cron="* * * * *", every=None, timezone="UTC", anchor=T0)


def run(
    policy: Policy,
    now: datetime,
    first: datetime | None = T0,
    *,
    live: bool = False,
    buffered: datetime | None = None,
    timing: Timing | None = None,
    t: Timeliness = TIMELY,
) -> Decision:
    return decide(
        timing or minutely(),
        policy,
        first,
        previous_live=live,
        buffered=buffered,
        now=now,
        timeliness=t,
    )


def outcomes(d: Decision) -> list[tuple[int, str]]:
    """(minutes after T0, outcome) of each action."""
    return [(int((a.instant - T0) / MINUTE), a.outcome) for a in d.actions]


DOWN = T0 + 10 * MINUTE + timedelta(seconds=5)  # the promoter was away for ten minutes


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Policy(catchup="none", overlap="allow"), [*((m, MISSED) for m in range(10))]),
        (
            Policy(catchup="latest", overlap="allow"),
            [*((m, MISSED) for m in range(9)), (9, CAUGHT_UP)],
        ),
        (
            Policy(catchup="all", max_catchup_runs=3, overlap="allow"),
            [*((m, MISSED) for m in range(7)), (7, CAUGHT_UP), (8, CAUGHT_UP), (9, CAUGHT_UP)],
        ),
        (
            Policy(catchup="all", max_catchup_runs=50, overlap="allow"),
            [(m, CAUGHT_UP) for m in range(10)],
        ),
        # Instants older than the window are missed whatever the policy.
        (
            Policy(catchup="all", catchup_window=300, overlap="allow"),
            [*((m, MISSED) for m in range(6)), *((m, CAUGHT_UP) for m in range(6, 10))],
        ),
    ],
)
def test_catch_up_after_an_outage(policy: Policy, expected: list[tuple[int, str]]) -> None:
    d = run(policy, DOWN)
    assert outcomes(d) == [*expected, (10, ENQUEUED)]  # 12:10 is on time (5 s late)
    assert d.next_instant == T0 + 11 * MINUTE
    assert [a.run for a in d.actions] == [o != MISSED for _, o in outcomes(d)]


def test_on_time_fires_are_materialised_ahead_by_the_lead() -> None:
    d = run(Policy(), T0 - timedelta(seconds=4))
    assert outcomes(d) == [(0, ENQUEUED)]
    assert d.next_instant == T0 + MINUTE
    assert run(Policy(), T0 - timedelta(seconds=6)).actions == ()


def test_overlap_skip_waits_for_the_instant_then_skips() -> None:
    early = run(Policy(overlap="skip"), T0 - timedelta(seconds=3), live=True)
    assert early.actions == () and early.next_instant == T0  # the run may still end in time
    d = run(Policy(overlap="skip"), T0 + timedelta(seconds=1), live=True)
    assert outcomes(d) == [(0, SKIPPED_OVERLAP)]
    assert d.next_instant == T0 + MINUTE


def test_overlap_allow_and_cancel_previous_run_anyway() -> None:
    now = T0 + timedelta(seconds=1)
    assert run(Policy(overlap="allow"), now, live=True).actions == (Action(T0, ENQUEUED, True),)
    assert run(Policy(overlap="cancel_previous"), now, live=True).actions == (
        Action(T0, ENQUEUED, True, cancel_previous=True),
    )


def test_buffer_one_holds_one_instant_until_the_previous_run_ends() -> None:
    p = Policy(overlap="buffer_one")
    first = run(p, T0 + timedelta(seconds=1), live=True)
    assert first.actions == () and first.buffered == T0
    second = run(p, T0 + MINUTE + timedelta(seconds=1), T0 + MINUTE, live=True, buffered=T0)
    assert outcomes(second) == [(1, SKIPPED_OVERLAP)] and second.buffered == T0
    ended = run(p, T0 + MINUTE + timedelta(seconds=20), T0 + 2 * MINUTE, buffered=T0)
    assert ended.actions == (Action(T0, ENQUEUED, True),)
    assert ended.buffered is None and ended.next_instant == T0 + 2 * MINUTE


def test_overlap_applies_to_caught_up_runs_too() -> None:
    d = run(Policy(catchup="all", overlap="skip"), DOWN)
    assert outcomes(d) == [(0, CAUGHT_UP), *((m, SKIPPED_OVERLAP) for m in range(1, 11))]


def test_a_long_outage_records_a_bounded_number_of_missed_rows() -> None:
    every_second = build_timing(cron=None, every=1, timezone="UTC", anchor=T0)
    now = T0 + timedelta(days=3)
    t = Timeliness(lead=0, grace=0.5, scan=5000, missed_rows=100)
    d = run(Policy(catchup="latest", overlap="allow"), now, timing=every_second, t=t)
    counts = Counter(a.outcome for a in d.actions)
    assert counts[MISSED] == 100 + 3600 - 1 and counts[CAUGHT_UP] == 1


def test_nothing_left_means_no_next_instant() -> None:
    bounded = build_timing(cron=None, every=60, timezone="UTC", anchor=T0, end_at=T0)
    d = run(Policy(), T0 + timedelta(seconds=1), timing=bounded)
    assert outcomes(d) == [(0, ENQUEUED)] and d.next_instant is None
    assert run(Policy(), T0, first=None).actions == ()


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (Policy(overlap="never"), "overlap"),  # type: ignore[arg-type]
        (Policy(catchup="some"), "catchup"),  # type: ignore[arg-type]
        (Policy(catchup_window=-1), "catchup_window"),
        (Policy(max_catchup_runs=0), "max_catchup_runs"),
        (Policy(jitter=-1), "jitter"),
    ],
)
def test_policy_fields_are_checked(policy: Policy, field: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        policy.check()
    assert caught.value.field == field


def test_jitter_is_deterministic_and_bounded() -> None:
    values = {jitter_seconds("s", T0 + i * MINUTE, 30) for i in range(200)}
    assert all(0 <= v < 30 for v in values) and len(values) == 200
    assert jitter_seconds("s", T0, 30) == jitter_seconds("s", T0, 30)
    assert jitter_seconds("s", T0, 0) == 0


policies = st.builds(
    Policy,
    overlap=st.sampled_from(["skip", "buffer_one", "allow", "cancel_previous"]),
    catchup=st.sampled_from(["latest", "none", "all"]),
    catchup_window=st.sampled_from([0.0, 30.0, 300.0, 3600.0]),
    max_catchup_runs=st.integers(1, 20),
)


def passes(policy: Policy, timing: Timing, now: datetime, t: Timeliness) -> list[Action]:
    """Decide repeatedly at one moment, as successive promoter passes would, until done."""
    actions: list[Action] = []
    first: datetime | None = T0
    for _ in range(1000):
        d = decide(timing, policy, first, previous_live=False, buffered=None, now=now, timeliness=t)
        actions += d.actions
        if d.next_instant == first or d.next_instant is None or d.next_instant > now:
            return actions
        first = d.next_instant
    raise AssertionError("no progress")


@settings(max_examples=80, deadline=None)
@given(
    policy=policies,
    period=st.sampled_from([1, 7, 60]),
    outage=st.integers(0, 4000),
    scan=st.integers(25, 60),
)
def test_deciding_in_small_passes_equals_one_big_pass(
    policy: Policy, period: int, outage: int, scan: int
) -> None:
    timing = build_timing(cron=None, every=period, timezone="UTC", anchor=T0)
    now = T0 + timedelta(seconds=outage)
    big = Timeliness(lead=0, grace=10, scan=100_000, missed_rows=100_000)
    small = Timeliness(lead=0, grace=10, scan=max(scan, policy.keep + 1), missed_rows=100_000)
    allow = Policy(
        overlap="allow",
        catchup=policy.catchup,
        catchup_window=policy.catchup_window,
        max_catchup_runs=policy.max_catchup_runs,
    )
    assert passes(allow, timing, now, small) == passes(allow, timing, now, big)


@settings(max_examples=80, deadline=None)
@given(
    policy=policies,
    outage=st.integers(0, 7200),
    live=st.booleans(),
    buffered=st.booleans(),
)
def test_every_decision_is_ordered_unique_and_capped(
    policy: Policy, outage: int, live: bool, buffered: bool
) -> None:
    now = T0 + timedelta(seconds=outage)
    held = T0 - MINUTE if buffered else None
    d = run(policy, now, live=live, buffered=held)
    instants = [a.instant for a in d.actions]
    assert instants == sorted(set(instants))  # strictly increasing: one action per instant
    if d.next_instant is not None and instants:
        assert d.next_instant > max(instants)
    assert sum(a.outcome == CAUGHT_UP for a in d.actions) <= policy.keep
    late = now - timedelta(seconds=TIMELY.grace)
    for a in d.actions:
        if a.outcome == ENQUEUED and a.instant != held:
            assert a.instant >= late
        if a.run and a.instant > now:
            assert a.outcome == ENQUEUED
    if policy.overlap not in ("allow", "cancel_previous"):
        assert sum(a.run for a in d.actions) <= 1
