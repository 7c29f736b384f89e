"""Cron evaluation in a zone (taskd/schedule/cron.py): the daylight-saving policy as tables for
four zones, properties against a brute-force oracle, and hostile expressions."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from taskd.schedule.cron import Cron, InvalidSchedule, next_fire, parse_cron, parse_zone
from taskd.schedule.timing import Timing, build_timing

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def timing(expr: str, zone: str) -> Timing:
    return build_timing(cron=expr, every=None, timezone=zone, anchor=EPOCH)


def fires_from(expr: str, zone: str, local_start: str, count: int) -> list[str]:
    """The next ``count`` fires after a local wall time (its first occurrence), as local
    RFC 3339 strings with their offsets."""
    z = ZoneInfo(zone)
    start = datetime.fromisoformat(local_start).replace(tzinfo=z).astimezone(UTC)
    return [t.astimezone(z).isoformat() for t in timing(expr, zone).upcoming(start, count)]


# (zone, expression, start (local wall time, first occurrence), expected fires).
# 2024 transitions: New York 10 Mar 02:00 -> 03:00, 3 Nov 02:00 -> 01:00; London 31 Mar
# 01:00 -> 02:00, 27 Oct 02:00 -> 01:00; Sydney 7 Apr 03:00 -> 02:00, 6 Oct 02:00 -> 03:00;
# Lord Howe (half-hour shift) 7 Apr 02:00 -> 01:30, 6 Oct 02:00 -> 02:30.
DST_TABLE = [
    # A wall time in the gap fires once, at the first instant after the gap.
    (
        "America/New_York",
        "30 2 * * *",
        "2024-03-09T00:00",
        ["2024-03-09T02:30:00-05:00", "2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"],
    ),
    # Everything the gap swallows is one fire; 03:00 itself is that same instant.
    (
        "America/New_York",
        "*/20 2,3 * * *",
        "2024-03-10T01:59",
        ["2024-03-10T03:00:00-04:00", "2024-03-10T03:20:00-04:00", "2024-03-10T03:40:00-04:00"],
    ),
    # A repeated wall time fires once (the first occurrence) for a fixed-hour entry.
    (
        "America/New_York",
        "30 1 * * *",
        "2024-11-02T00:00",
        ["2024-11-02T01:30:00-04:00", "2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"],
    ),
    (
        "America/New_York",
        "*/30 1 * * *",
        "2024-11-03T00:59",
        ["2024-11-03T01:00:00-04:00", "2024-11-03T01:30:00-04:00", "2024-11-04T01:00:00-05:00"],
    ),
    # Wildcard and step hours fire by elapsed time: nothing in the gap, twice in the fold.
    (
        "America/New_York",
        "*/30 * * * *",
        "2024-03-10T01:00",
        ["2024-03-10T01:30:00-05:00", "2024-03-10T03:00:00-04:00", "2024-03-10T03:30:00-04:00"],
    ),
    (
        "America/New_York",
        "0 * * * *",
        "2024-11-03T00:30",
        [
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T02:00:00-05:00",
            "2024-11-03T03:00:00-05:00",
        ],
    ),
    (
        "America/New_York",
        "0 */2 * * *",
        "2024-03-09T23:30",
        ["2024-03-10T00:00:00-05:00", "2024-03-10T04:00:00-04:00", "2024-03-10T06:00:00-04:00"],
    ),
    (
        "Europe/London",
        "30 1 * * *",
        "2024-03-30T00:00",
        ["2024-03-30T01:30:00+00:00", "2024-03-31T02:00:00+01:00", "2024-04-01T01:30:00+01:00"],
    ),
    (
        "Europe/London",
        "30 1 * * *",
        "2024-10-26T00:00",
        ["2024-10-26T01:30:00+01:00", "2024-10-27T01:30:00+01:00", "2024-10-28T01:30:00+00:00"],
    ),
    (
        "Europe/London",
        "45 * * * *",
        "2024-10-27T00:50",
        ["2024-10-27T01:45:00+01:00", "2024-10-27T01:45:00+00:00", "2024-10-27T02:45:00+00:00"],
    ),
    # Six fields (seconds first) follow the same policy.
    (
        "Europe/London",
        "15 30 1 * * *",
        "2024-10-27T01:40",
        ["2024-10-28T01:30:15+00:00", "2024-10-29T01:30:15+00:00"],
    ),
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2024-10-05T00:00",
        ["2024-10-05T02:30:00+10:00", "2024-10-06T03:00:00+11:00", "2024-10-07T02:30:00+11:00"],
    ),
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2024-04-06T00:00",
        ["2024-04-06T02:30:00+11:00", "2024-04-07T02:30:00+11:00", "2024-04-08T02:30:00+10:00"],
    ),
    (
        "Australia/Sydney",
        "0 */1 * * *",
        "2024-04-07T01:30",
        [
            "2024-04-07T02:00:00+11:00",
            "2024-04-07T02:00:00+10:00",
            "2024-04-07T03:00:00+10:00",
        ],
    ),
    # Lord Howe moves by half an hour.
    (
        "Australia/Lord_Howe",
        "0 2 * * *",
        "2024-10-05T00:00",
        ["2024-10-05T02:00:00+10:30", "2024-10-06T02:30:00+11:00", "2024-10-07T02:00:00+11:00"],
    ),
    (
        "Australia/Lord_Howe",
        "0,15,30,45 2 * * *",
        "2024-10-06T00:00",
        ["2024-10-06T02:30:00+11:00", "2024-10-06T02:45:00+11:00", "2024-10-07T02:00:00+11:00"],
    ),
    (
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2024-04-06T00:00",
        ["2024-04-06T01:45:00+11:00", "2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"],
    ),
    (
        "Australia/Lord_Howe",
        "*/15 * * * *",
        "2024-04-07T01:20",
        [
            "2024-04-07T01:30:00+11:00",
            "2024-04-07T01:45:00+11:00",
            "2024-04-07T01:30:00+10:30",
            "2024-04-07T01:45:00+10:30",
            "2024-04-07T02:00:00+10:30",
        ],
    ),
]


@pytest.mark.parametrize(("zone", "expr", "start", "expected"), DST_TABLE)
def test_daylight_saving_table(zone: str, expr: str, start: str, expected: list[str]) -> None:
    assert fires_from(expr, zone, start, len(expected)) == expected


def test_weekday_nine_oclock_new_york_stays_at_nine_across_both_changes() -> None:
    fires = fires_from("0 9 * * 1-5", "America/New_York", "2024-03-07T00:00", 4)
    assert fires == [
        "2024-03-07T09:00:00-05:00",
        "2024-03-08T09:00:00-05:00",
        "2024-03-11T09:00:00-04:00",
        "2024-03-12T09:00:00-04:00",
    ]
    utc_hours = [
        datetime.fromisoformat(f).astimezone(UTC).hour
        for f in fires_from("0 9 * * 1-5", "America/New_York", "2024-10-31T00:00", 3)
    ]
    assert utc_hours == [13, 13, 14]  # Thu, Fri in EDT; Mon after the change in EST


def test_resuming_from_a_second_occurrence_skips_the_rest_of_the_fold() -> None:
    z = ZoneInfo("America/New_York")
    second = datetime(2024, 11, 3, 1, 10, tzinfo=z, fold=1).astimezone(UTC)  # 01:10 EST
    found = next_fire(parse_cron("*/5 1 * * *"), z, second)
    assert found is not None
    assert found.astimezone(z).isoformat() == "2024-11-04T01:00:00-05:00"


# --- properties against a brute-force oracle -------------------------------------------------

ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Australia/Lord_Howe", "UTC"]
TRANSITIONS = [  # UTC instants of 2024 transitions (and one ordinary day)
    datetime(2024, 3, 10, 7, tzinfo=UTC),
    datetime(2024, 11, 3, 6, tzinfo=UTC),
    datetime(2024, 3, 31, 1, tzinfo=UTC),
    datetime(2024, 10, 27, 1, tzinfo=UTC),
    datetime(2024, 4, 6, 16, tzinfo=UTC),
    datetime(2024, 10, 5, 16, tzinfo=UTC),
    datetime(2024, 4, 6, 15, tzinfo=UTC),
    datetime(2024, 10, 5, 15, 30, tzinfo=UTC),
    datetime(2024, 6, 1, 12, tzinfo=UTC),
]
minutes = st.sampled_from(["0", "30", "*/15", "0,45", "*/20", "10-50/20", "59"])
hours = st.sampled_from(["*", "*/2", "1-23/3", "1", "2", "3", "1,2", "0-3", "1-2"])
exprs = st.builds(lambda m, h: f"{m} {h} * * *", minutes, hours)


def _matches(expr: str, wall: datetime) -> bool:
    return next(CronSim(expr, wall - timedelta(seconds=1))) == wall


def oracle(cron: Cron, zone: ZoneInfo, lo: datetime, hi: datetime) -> list[datetime]:
    """Fires in (lo, hi] by the policy's definition, scanning every UTC minute."""
    found: set[datetime] = set()
    t = lo.replace(second=0, microsecond=0) - timedelta(minutes=1)
    while t <= hi:
        t += timedelta(minutes=1)
        local = t.astimezone(zone)
        wall = local.replace(tzinfo=None)
        repeated = local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset()
        if _matches(cron.expression, wall) and (cron.elapsed or not (repeated and local.fold)):
            found.add(t)
        # Fixed-hour entries: walls skipped by a gap just before t fire at t.
        before = (t - timedelta(minutes=1)).astimezone(zone)
        jump = (local.replace(tzinfo=None) - before.replace(tzinfo=None)) - timedelta(minutes=1)
        if not cron.elapsed and jump > timedelta(0):
            w = before.replace(tzinfo=None) + timedelta(minutes=1)
            while w < wall:
                if _matches(cron.expression, w):
                    found.add(t)
                w += timedelta(minutes=1)
    return sorted(x for x in found if lo < x <= hi)


@settings(max_examples=60, deadline=None)
@given(
    expr=exprs,
    zone=st.sampled_from(ZONES),
    at=st.sampled_from(TRANSITIONS),
    offset=st.integers(-4 * 60, 2 * 60),
)
def test_fires_equal_the_oracle_and_strictly_increase(
    expr: str, zone: str, at: datetime, offset: int
) -> None:
    cron, z = parse_cron(expr), ZoneInfo(zone)
    lo = at + timedelta(minutes=offset)
    hi = lo + timedelta(hours=5)
    fires = []
    t: datetime | None = lo
    while t is not None and t <= hi:
        t = next_fire(cron, z, t)
        if t is not None and t <= hi:
            fires.append(t)
    assert all(a < b for a, b in itertools.pairwise(fires))
    assert fires == oracle(cron, z, lo, hi)


@settings(max_examples=60, deadline=None)
@given(
    expr=exprs,
    zone=st.sampled_from(ZONES),
    at=st.sampled_from(TRANSITIONS),
    offsets=st.lists(st.integers(-3 * 3600, 3 * 3600), min_size=1, max_size=6),
)
def test_evaluation_does_not_depend_on_where_it_resumes(
    expr: str, zone: str, at: datetime, offsets: list[int]
) -> None:
    """From any instant, the next fire is the first fire of the sequence after it: a promoter
    that restarts anywhere never fires an instant twice or skips one."""
    cron, z = parse_cron(expr), ZoneInfo(zone)
    lo = at - timedelta(hours=4)
    seq = timing(expr, zone).upcoming(lo, 40)
    for off in offsets:
        x = at + timedelta(seconds=off)
        expected = next((f for f in seq if f > x), None)
        if expected is not None:
            assert next_fire(cron, z, x) == expected


@settings(max_examples=40, deadline=None)
@given(
    every=st.floats(1, 7 * 86400),
    anchor_s=st.integers(0, 10**9),
    after_s=st.floats(-(10**6), 10**7),
)
def test_interval_fires_are_anchor_plus_whole_steps(
    every: float, anchor_s: int, after_s: float
) -> None:
    anchor = datetime.fromtimestamp(1_600_000_000 + anchor_s, UTC)
    t = build_timing(cron=None, every=every, timezone="America/New_York", anchor=anchor)
    after = anchor + timedelta(seconds=after_s)
    fires = t.upcoming(after, 3)
    step = timedelta(microseconds=round(every * 1_000_000))
    assert fires[0] > after
    assert fires[0] - step <= after or fires[0] == anchor
    assert [b - a for a, b in itertools.pairwise(fires)] == [step, step]
    assert all((f - anchor) % step == timedelta(0) for f in fires)


# --- validation -------------------------------------------------------------------------------

HOSTILE = [
    "61 * * * *",
    "* * * *",
    "* * * * * * *",
    "0-4000000000 * * * *",
    "99999999999999999999999999 * * * *",
    "1-59/0 * * * *",
    "*/1," * 60 + "* * * * *",
    "0 0 31 2 *",
    "0 0 " + "1," * 5000 + "1 * *",
    "x" * 100_000,
    "0 0 * * 8",
    "@reboot",
    "0 0 * * MON#9",
    "0\x00 * * * *",
    "0 0 L-3 * *",
    "",
]


@pytest.mark.parametrize("expr", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_expressions_are_refused_quickly(expr: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidSchedule) as caught:
        parse_cron(expr)
    assert caught.value.field == "cron"
    assert time.perf_counter() - started < 0.05


def test_macros_and_names_are_accepted() -> None:
    assert parse_cron("@daily").expression == "0 0 * * *"
    assert parse_cron("0  9 * * mon-fri") == Cron("0 9 * * mon-fri", elapsed=False)
    assert parse_cron("*/5 * * * * *").elapsed


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "../../etc/passwd", "America/New_York\x00", "a" * 100, "", "/"]
)
def test_unknown_or_hostile_zones_are_refused(name: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_zone(name)
    assert caught.value.field == "timezone"


def test_timing_fields_are_checked_together() -> None:
    for kw, field in [
        ({"cron": None, "every": None}, "cron"),
        ({"cron": "* * * * *", "every": 5.0}, "cron"),
        ({"cron": None, "every": 0.5}, "every"),
        ({"cron": None, "every": 10.0, "end_at": EPOCH - timedelta(days=1)}, "end_at"),
        ({"cron": None, "every": 10.0, "start_at": datetime(2024, 1, 1)}, "start_at"),
    ]:
        args = {"timezone": "UTC", "anchor": EPOCH, "start_at": EPOCH, **kw}
        with pytest.raises(InvalidSchedule) as caught:
            build_timing(**args)  # type: ignore[arg-type]
        assert caught.value.field == field, kw


def test_bounds_limit_the_instants() -> None:
    start = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
    t = build_timing(
        cron="* * * * *",
        every=None,
        timezone="UTC",
        anchor=EPOCH,
        start_at=start,
        end_at=start + timedelta(minutes=2),
    )
    assert t.upcoming(EPOCH, 5) == [
        datetime(2024, 1, 1, 0, 1, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 2, tzinfo=UTC),
    ]
    every = build_timing(cron=None, every=60, timezone="UTC", anchor=start, start_at=start)
    assert every.upcoming(EPOCH, 2) == [start, start + timedelta(minutes=1)]
    assert every.between(start, start + timedelta(minutes=5), 3) == [
        start + timedelta(minutes=i) for i in range(3)
    ]
