"""Cron expressions evaluated in a time zone, with taskd's daylight-saving policy. Pure.

cronsim parses the expression and walks *wall-clock* times (naive datetimes, never its own
time-zone handling); this module maps each matching wall time to the instants it denotes:

- an ordinary wall time is one instant;
- a wall time inside a spring-forward gap does not exist. A **fixed-hour** entry (an hour field
  without ``*`` or ``/``, e.g. ``30 2 * * *``) fires once, at the first instant after the gap
  (03:00 where 02:00-02:59 is skipped); everything the gap swallows fires as that one instant.
  An **elapsed-time** entry (hour field with ``*`` or ``/``) has no fire in the gap: its fires
  stay the wall-clock spacing apart in real time (``0 * * * *`` fires at 01:00 and 03:00,
  one hour apart);
- a wall time in a fall-back fold happens twice. A fixed-hour entry fires once, at the first
  occurrence; an elapsed-time entry fires at both (``*/15 * * * *`` keeps firing every 15
  minutes through the repeated hour).

Every evaluation is "the first fire strictly after this instant", so fires are strictly
increasing and no instant is produced twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MAX_EXPRESSION_LENGTH = 200
MAX_ZONE_LENGTH = 64
# Every field character cronsim understands (digits, names, * / , - # L and blanks).
_ALLOWED = re.compile(r"[0-9A-Za-z*/,#\- \t]+")
_ZONE = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SECOND = timedelta(seconds=1)


class InvalidSchedule(ValueError):
    """A schedule field that cannot be used; ``field`` names it as the API does."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Cron:
    """A validated expression: 5 fields, or 6 with seconds first."""

    expression: str
    elapsed: bool  # hour field with a wildcard or a step: fires by elapsed time


def parse_cron(text: str, field: str = "cron") -> Cron:
    """Validate ``text``; raises InvalidSchedule naming ``field``. Cheap on hostile input:
    the length and alphabet are checked before cronsim sees anything."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise InvalidSchedule(field, f"longer than {MAX_EXPRESSION_LENGTH} characters")
    expression = MACROS.get(text.strip().lower(), text)
    if not _ALLOWED.fullmatch(expression):
        raise InvalidSchedule(field, "may hold only digits, names, blanks and * / , - # L")
    parts = expression.split()
    if len(parts) not in (5, 6):
        raise InvalidSchedule(field, f"needs 5 fields (or 6 with seconds), not {len(parts)}")
    expression = " ".join(parts)
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except (CronSimError, ValueError, IndexError) as e:
        raise InvalidSchedule(field, f"not a valid cron expression ({e})") from e
    hour = parts[-4]
    return Cron(expression, elapsed="*" in hour or "/" in hour)


def parse_zone(name: str, field: str = "timezone") -> ZoneInfo:
    """An IANA zone by name (``UTC``, ``America/New_York``); raises InvalidSchedule."""
    if len(name) > MAX_ZONE_LENGTH or not _ZONE.fullmatch(name):
        raise InvalidSchedule(field, "not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:
        raise InvalidSchedule(field, f"unknown time zone {name!r}") from e


def next_fire(cron: Cron, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first fire of ``cron`` in ``zone`` strictly after the aware instant ``after``
    (UTC result), or None when nothing matches within cronsim's 50-year horizon."""
    after = after.astimezone(UTC)
    local = after.astimezone(zone)
    wall = local.replace(tzinfo=None)
    second = _second_occurrence(local)
    start = wall
    if second and not cron.elapsed:
        # Fixed-hour entries fire at the first occurrence only: skip the rest of the fold.
        start = max(wall, _fold_end(after, local, zone) - _SECOND)
    try:
        found = _first_after(cron, zone, start, after)
        if cron.elapsed and _ambiguous(local) and not second:
            again = _repeat_in_fold(cron, zone, after, local)
            if again is not None and (found is None or again < found):
                found = again
    except StopIteration:
        return None
    return found


def _first_after(cron: Cron, zone: ZoneInfo, start: datetime, after: datetime) -> datetime | None:
    """The earliest instant later than ``after`` of the first wall time past ``start`` that
    denotes one (gap walls of elapsed entries denote none)."""
    walls = CronSim(cron.expression, start)
    while True:
        w = next(walls)
        later = [i for i in _instants(cron, zone, w) if i > after]
        if later:
            return min(later)


def _repeat_in_fold(
    cron: Cron, zone: ZoneInfo, after: datetime, local: datetime
) -> datetime | None:
    """``after`` is a first occurrence inside a fold: an elapsed entry also fires at the second
    occurrence of the fold's earliest matching wall time, which may come before any later wall."""
    shift = _fold_shift(local)
    transition = _transition(after, after + shift, zone)
    fold_start = transition.astimezone(zone).replace(tzinfo=None)
    w = next(CronSim(cron.expression, fold_start - _SECOND))
    if w > local.replace(tzinfo=None):
        return None  # later walls are covered by their first occurrences
    return w.replace(tzinfo=zone, fold=1).astimezone(UTC)


def _instants(cron: Cron, zone: ZoneInfo, wall: datetime) -> tuple[datetime, ...]:
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if first.astimezone(zone).replace(tzinfo=None) != wall:  # inside a gap
        # PEP 495: fold=1 reads a gap time with the offset after the transition, fold=0 with
        # the one before, so the transition lies between the two readings.
        return () if cron.elapsed else (_transition(second, first, zone),)
    return (first, second) if cron.elapsed else (first,)


def _ambiguous(local: datetime) -> bool:
    """Whether the wall time of an existing local time happens twice (a fold)."""
    return local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset()


def _second_occurrence(local: datetime) -> bool:
    return local.fold == 1 and _ambiguous(local)


def _fold_shift(local: datetime) -> timedelta:
    a, b = local.replace(fold=0).utcoffset(), local.replace(fold=1).utcoffset()
    assert a is not None and b is not None
    return a - b


def _fold_end(after: datetime, local: datetime, zone: ZoneInfo) -> datetime:
    """The first wall time after the fold that ``after`` (a second occurrence) lies in."""
    shift = _fold_shift(local)
    transition = _transition(after - shift, after, zone)
    return transition.astimezone(zone).replace(tzinfo=None) + shift


def _transition(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (lo, hi] with ``hi``'s UTC offset: the one transition between
    them (tz data changes offsets on whole seconds)."""
    target = hi.astimezone(zone).utcoffset()
    low, high = int(lo.timestamp()), int(hi.timestamp())
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == target:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)
