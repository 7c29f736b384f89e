"""When a schedule fires: a cron expression in a zone, or a fixed interval, between bounds. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from taskd.schedule.cron import Cron, InvalidSchedule, next_fire, parse_cron, parse_zone

_TICK = timedelta(microseconds=1)
MIN_EVERY_SECONDS = 1.0
MAX_EVERY_SECONDS = 366 * 86400.0


@dataclass(frozen=True, slots=True)
class Timing:
    """The instants of one schedule, all aware UTC datetimes.

    ``every`` schedules fire at ``anchor + k × every`` (k = 0, 1, ...) whatever the zone: an
    interval is elapsed time, so daylight saving does not move it.
    """

    cron: Cron | None
    every: float | None
    zone: ZoneInfo
    anchor: datetime
    start_at: datetime | None = None
    end_at: datetime | None = None

    def next_after(self, after: datetime) -> datetime | None:
        """The first instant strictly after ``after`` within [start_at, end_at], or None."""
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - _TICK
        try:
            found = self._raw_next(after)
        except OverflowError:  # past year 9999
            return None
        if found is None or (self.end_at is not None and found > self.end_at):
            return None
        return found

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        t: datetime | None = after
        while len(out) < count and t is not None:
            t = self.next_after(t)
            if t is not None:
                out.append(t)
        return out

    def between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Instants in [start, end], at most ``limit`` (the earliest)."""
        out: list[datetime] = []
        t = self.next_after(start - _TICK)
        while t is not None and t <= end and len(out) < limit:
            out.append(t)
            t = self.next_after(t)
        return out

    def _raw_next(self, after: datetime) -> datetime | None:
        if self.cron is not None:
            return next_fire(self.cron, self.zone, after)
        assert self.every is not None
        step = timedelta(microseconds=round(self.every * 1_000_000))
        if after < self.anchor:
            return self.anchor
        k = (after - self.anchor) // step + 1
        return self.anchor + k * step


def build_timing(
    *,
    cron: str | None,
    every: float | None,
    timezone: str,
    anchor: datetime,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> Timing:
    """Validate the timing fields together; raises InvalidSchedule naming the first bad one."""
    zone = parse_zone(timezone)
    if (cron is None) == (every is None):
        raise InvalidSchedule("cron", "give exactly one of cron and every")
    parsed = parse_cron(cron) if cron is not None else None
    if every is not None and not MIN_EVERY_SECONDS <= every <= MAX_EVERY_SECONDS:
        raise InvalidSchedule(
            "every", f"must be from {MIN_EVERY_SECONDS:g} to {MAX_EVERY_SECONDS:g} seconds"
        )
    for name, value in (("start_at", start_at), ("end_at", end_at)):
        if value is not None and value.tzinfo is None:
            raise InvalidSchedule(name, "needs a time zone offset (e.g. Z)")
    if start_at is not None and end_at is not None and end_at < start_at:
        raise InvalidSchedule("end_at", "is before start_at")
    return Timing(
        parsed,
        every,
        zone,
        anchor.astimezone(UTC),
        start_at.astimezone(UTC) if start_at else None,
        end_at.astimezone(UTC) if end_at else None,
    )
