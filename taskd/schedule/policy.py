"""What a promoter does with a schedule's due instants: catch-up and overlap decisions. Pure.

The firer calls :func:`decide` with the schedule's first undecided instant, what it knows of
the previous run and the time; it records every returned action (one fire row per instant) and
stores the new ``next_instant`` and ``buffered`` in the same transaction.

Timeliness (``lead`` and ``grace`` come from the firer's configuration):

- an instant up to ``lead`` seconds ahead is materialised now, as a delayed task, so that it
  starts on time even when the promoter is busy — unless the overlap policy needs to see
  whether the previous run is still live at the instant, in which case it waits for it;
- an instant less than ``grace`` seconds old is on time (``enqueued``);
- an older one is late: the catch-up policy runs none, the latest, or all of those within
  ``catchup_window`` (at most ``max_catchup_runs``, the most recent), and records the others
  as ``missed``. Instants older than the window are always missed.

Overlap applies to every run, caught-up ones included: the "previous run" is the schedule's
latest task, whether it was created in an earlier pass or earlier in this one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from taskd.schedule.cron import InvalidSchedule
from taskd.schedule.timing import Timing

Overlap = Literal["skip", "buffer_one", "allow", "cancel_previous"]
Catchup = Literal["latest", "none", "all"]
OVERLAPS: tuple[Overlap, ...] = ("skip", "buffer_one", "allow", "cancel_previous")
CATCHUPS: tuple[Catchup, ...] = ("latest", "none", "all")

ENQUEUED = "enqueued"
CAUGHT_UP = "caught_up"
SKIPPED_OVERLAP = "skipped_overlap"
MISSED = "missed"
TRIGGERED = "triggered"
BACKFILLED = "backfilled"
OUTCOMES = (ENQUEUED, CAUGHT_UP, SKIPPED_OVERLAP, MISSED, TRIGGERED, BACKFILLED)

MAX_CATCHUP_WINDOW = 31 * 86400.0
MAX_CATCHUP_RUNS = 1000
MAX_JITTER = 86400.0


@dataclass(frozen=True, slots=True)
class Policy:
    overlap: Overlap = "skip"
    catchup: Catchup = "latest"
    catchup_window: float = 3600.0
    max_catchup_runs: int = 10
    jitter: float = 0.0

    def check(self) -> None:
        """Raise InvalidSchedule naming the first field out of range."""
        if self.overlap not in OVERLAPS:
            raise InvalidSchedule("overlap", f"must be one of {', '.join(OVERLAPS)}")
        if self.catchup not in CATCHUPS:
            raise InvalidSchedule("catchup", f"must be one of {', '.join(CATCHUPS)}")
        if not 0 <= self.catchup_window <= MAX_CATCHUP_WINDOW:
            raise InvalidSchedule("catchup_window", f"must be from 0 to {MAX_CATCHUP_WINDOW:g}")
        if not 1 <= self.max_catchup_runs <= MAX_CATCHUP_RUNS:
            raise InvalidSchedule("max_catchup_runs", f"must be from 1 to {MAX_CATCHUP_RUNS}")
        if not 0 <= self.jitter <= MAX_JITTER:
            raise InvalidSchedule("jitter", f"must be from 0 to {MAX_JITTER:g} seconds")

    @property
    def keep(self) -> int:
        """How many late instants the catch-up policy runs."""
        return {"none": 0, "latest": 1, "all": self.max_catchup_runs}[self.catchup]


@dataclass(frozen=True, slots=True)
class Timeliness:
    lead: float = 5.0  # seconds ahead a fire is materialised
    grace: float = 30.0  # seconds after its instant a fire still counts as on time
    scan: int = 2000  # instants one decision looks at, at most
    missed_rows: int = 100  # instants older than the window recorded one by one, per decision


@dataclass(frozen=True, slots=True)
class Due:
    instant: datetime
    outcome: str  # ENQUEUED, CAUGHT_UP or MISSED


@dataclass(frozen=True, slots=True)
class Plan:
    fires: tuple[Due, ...]
    next_instant: datetime | None  # the first instant not decided


def plan(timing: Timing, policy: Policy, first: datetime, now: datetime, t: Timeliness) -> Plan:
    """Catch-up: classify the instants from ``first`` up to ``now + lead``."""
    late_before = now - timedelta(seconds=t.grace)
    window_from = now - timedelta(seconds=policy.catchup_window)
    fires: list[Due] = []
    cur: datetime | None = first
    # Older than the window (and late): missed. A long outage records the first few only.
    boundary = min(window_from, late_before)
    recorded = 0
    while cur is not None and cur < boundary:
        if recorded == t.missed_rows:
            cur = timing.next_after(boundary - timedelta(microseconds=1))
            break
        fires.append(Due(cur, MISSED))
        recorded += 1
        cur = timing.next_after(cur)
    late: list[datetime] = []
    while cur is not None and cur < late_before and len(late) < t.scan:
        late.append(cur)
        cur = timing.next_after(cur)
    keep = policy.keep
    if cur is not None and cur < late_before:
        # More late instants than one decision scans: the earlier ones cannot be among the
        # latest, the trailing ``keep`` are decided by a later pass.
        cut = max(len(late) - keep, 0)
        fires += [Due(x, MISSED) for x in late[:cut]]
        return Plan(tuple(fires), late[cut] if cut < len(late) else cur)
    cut = max(len(late) - keep, 0)
    fires += [Due(x, MISSED) for x in late[:cut]]
    fires += [Due(x, CAUGHT_UP) for x in late[cut:]]
    horizon = now + timedelta(seconds=t.lead)
    ahead = 0
    while cur is not None and cur <= horizon and ahead < t.scan:
        fires.append(Due(cur, ENQUEUED))
        ahead += 1
        cur = timing.next_after(cur)
    return Plan(tuple(fires), cur)


@dataclass(frozen=True, slots=True)
class Action:
    instant: datetime
    outcome: str
    run: bool  # create a task for this fire
    cancel_previous: bool = False  # cancel the previous run first


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...]
    next_instant: datetime | None
    buffered: datetime | None


def decide(
    timing: Timing,
    policy: Policy,
    first: datetime | None,
    *,
    previous_live: bool,
    buffered: datetime | None,
    now: datetime,
    timeliness: Timeliness,
) -> Decision:
    """Catch-up, then overlap, for one schedule at ``now``."""
    actions: list[Action] = []
    live = previous_live
    if buffered is not None and not live:  # buffer_one: the held instant runs now
        actions.append(Action(buffered, ENQUEUED, run=True))
        live, buffered = True, None
    if first is None:
        return Decision(tuple(actions), None, buffered)
    p = plan(timing, policy, first, now, timeliness)
    for due in p.fires:
        if due.outcome == MISSED:
            actions.append(Action(due.instant, MISSED, run=False))
        elif not live or policy.overlap == "allow":
            actions.append(Action(due.instant, due.outcome, run=True))
            live = True
        elif due.instant > now:  # the previous run may still end before this instant
            return Decision(tuple(actions), due.instant, buffered)
        elif policy.overlap == "cancel_previous":
            actions.append(Action(due.instant, due.outcome, run=True, cancel_previous=True))
        elif policy.overlap == "buffer_one" and buffered is None:
            buffered = due.instant
        else:
            actions.append(Action(due.instant, SKIPPED_OVERLAP, run=False))
    return Decision(tuple(actions), p.next_instant, buffered)


def jitter_seconds(schedule_id: str, instant: datetime, jitter: float) -> float:
    """A delay in [0, jitter) that every promoter computes alike for the same fire."""
    if jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{schedule_id}:{instant.isoformat()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * jitter
