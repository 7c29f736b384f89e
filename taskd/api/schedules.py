"""Schedules through the API and the configuration: validation, placement in time, views,
and the fires the API makes (trigger, backfill). The promoter's firer makes the others."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from taskd import metrics
from taskd.api.errors import ApiError, problem, validation_error
from taskd.api.representation import rfc3339
from taskd.api.schedule_schemas import (
    MAX_BACKFILL,
    BackfillFire,
    BackfillRequest,
    BackfillResult,
    FireView,
    SchedulePatch,
    ScheduleSubmission,
    ScheduleView,
    TaskTemplate,
)
from taskd.api.schemas import EARLIEST_TIME, LATEST_TIME
from taskd.api.submit import SubmitService
from taskd.clock import Clock
from taskd.errors import ConfigError
from taskd.schedule.cron import InvalidSchedule
from taskd.schedule.policy import BACKFILLED, TRIGGERED
from taskd.schedule.spec import ScheduleSpec
from taskd.schedule.timing import Timing, build_timing
from taskd.store.schedules import FireSpec, Placement, ScheduleDef, ScheduleStore, timing_of

NEXT_FIRES = 5
# Fields that decide when a schedule fires: changing one moves its next instant.
TIMING_FIELDS = ("cron", "every", "timezone", "start_at", "end_at")


def _now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


class ScheduleService:
    def __init__(self, store: ScheduleStore, submit: SubmitService, clock: Clock) -> None:
        self.store = store
        self.submit = submit
        self.clock = clock

    # --- definitions ------------------------------------------------------------------------

    def definition(self, sub: ScheduleSubmission, tenant: str) -> tuple[ScheduleDef, Timing]:
        """Check everything the schema cannot; 422 naming each bad field."""
        details: list[dict[str, Any]] = []
        timing: Timing | None = None
        try:
            timing = build_timing(
                cron=sub.cron,
                every=sub.every,
                timezone=sub.timezone,
                anchor=EARLIEST_TIME,
                start_at=sub.start_at,
                end_at=sub.end_at,
            )
            _check_range(sub.start_at, "start_at")
            _check_range(sub.end_at, "end_at")
        except InvalidSchedule as e:
            details.append(problem(e.field, e.problem))
        try:
            self.submit.prepare(sub.task.submission(), tenant, None, "task.")
        except ApiError as e:
            if e.status != 422:
                raise
            details += e.details
        if details or timing is None:
            raise validation_error(details)
        d = ScheduleDef(
            name=sub.name,
            cron=timing.cron.expression if timing.cron else None,
            every=sub.every,
            timezone=sub.timezone,
            task=msgspec.to_builtins(sub.task),
            overlap=sub.overlap,
            catchup=sub.catchup,
            catchup_window=sub.catchup_window,
            max_catchup_runs=sub.max_catchup_runs,
            jitter=sub.jitter,
            start_at=sub.start_at,
            end_at=sub.end_at,
            paused=sub.paused,
        )
        return d, timing

    def placement(
        self, timing: Timing, *, after: datetime | None = None, anchor: datetime | None = None
    ) -> Placement:
        """Anchor ``every`` schedules at start_at, else now; the first instant comes strictly
        after ``after`` (default: now) — instants before a schedule existed never fire."""
        now = _now(self.clock)
        anchor = anchor or timing.start_at or now
        placed = dataclasses.replace(timing, anchor=anchor)
        first = placed.next_after(max(now, after) if after else now)
        return Placement(anchor, first)

    def new(self, sub: ScheduleSubmission, tenant: str) -> tuple[ScheduleDef, Placement]:
        d, timing = self.definition(sub, tenant)
        place = self.placement(timing)
        if place.next_fire_at is None:
            field = "end_at" if sub.end_at is not None else ("cron" if sub.cron else "every")
            raise validation_error([problem(field, "the schedule has no fire time ahead")])
        return d, place

    def patched(self, row: asyncpg.Record, patch: SchedulePatch) -> tuple[ScheduleDef, Placement]:
        """The definition and placement after a PATCH (or pause/resume) of ``row``."""
        if row["source"] == "config":
            raise ApiError(
                409,
                "conflict",
                "this schedule is declared in the configuration: change it there",
                [problem("source", "config")],
            )
        merged = _merge(row, patch)
        sub = _convert(merged)
        d, timing = self.definition(sub, row["tenant"])
        moved = any(getattr(d, f) != row[f] for f in TIMING_FIELDS)
        resumed = row["paused"] and not d.paused
        if not (moved or resumed):
            return d, Placement(row["anchor"], row["next_fire_at"])
        same_grid = d.every == row["every"] and d.start_at == row["start_at"]
        anchor = row["anchor"] if same_grid else None
        return d, self.placement(timing, after=row["last_fire_at"], anchor=anchor)

    # --- configuration ----------------------------------------------------------------------

    async def declare(self, specs: Sequence[ScheduleSpec]) -> list[tuple[str, str]]:
        """Upsert the configuration's schedules by (tenant, name); returns those removed."""
        items = []
        for spec in specs:
            try:
                sub = _convert(spec.fields())
                d, timing = self.definition(sub, spec.tenant)
            except ApiError as e:
                where = "; ".join(f"{x['field']}: {x['problem']}" for x in e.details)
                raise ConfigError(f"schedules[{spec.name}]: {where or e.message}") from e
            items.append((spec.tenant, d, self.placement(timing)))
        return await self.store.declare(items)

    # --- views ------------------------------------------------------------------------------

    def view(self, row: asyncpg.Record, *, upcoming: bool = False) -> ScheduleView:
        v = ScheduleView(
            id=str(row["id"]),
            name=row["name"],
            cron=row["cron"],
            every=row["every"],
            timezone=row["timezone"],
            task=msgspec.convert(row["task"], TaskTemplate),
            overlap=row["overlap"],
            catchup=row["catchup"],
            catchup_window=row["catchup_window"],
            max_catchup_runs=row["max_catchup_runs"],
            jitter=row["jitter"],
            start_at=rfc3339(row["start_at"]),
            end_at=rfc3339(row["end_at"]),
            paused=row["paused"],
            source=row["source"],
            next_fire_at=rfc3339(row["next_fire_at"]),
            last_fire_at=rfc3339(row["last_fire_at"]),
            created_at=rfc3339(row["created_at"]) or "",
            updated_at=rfc3339(row["updated_at"]) or "",
        )
        if upcoming:
            v.next_fires = [rfc3339(t) or "" for t in self.upcoming(row)]
        return v

    def upcoming(self, row: asyncpg.Record) -> list[datetime]:
        """The next five instants: from the first undecided one (nothing while paused)."""
        first = row["next_fire_at"]
        if first is None or row["paused"]:
            return []
        timing = timing_of(row)
        return [first, *timing.upcoming(first, NEXT_FIRES - 1)]

    # --- fires the API makes ----------------------------------------------------------------

    async def trigger(self, schedule_id: uuid.UUID, tenant: str | None) -> FireView | None:
        """Run now: a fire at the current instant, whatever the overlap policy says. It is the
        schedule's latest run for the overlap policy of the fires after it."""
        now = _now(self.clock)
        async with self.store.transaction() as conn:
            row = await self.store.lock(conn, schedule_id, tenant)
            if row is None:
                return None
            fired = await self.store.record_fires(conn, row, [FireSpec(now, TRIGGERED, True, now)])
            if not fired.fires:
                raise ApiError(409, "conflict", "this instant was just fired; try again")
            task = fired.fires[0][2]
            if task is not None:
                await self.store.set_last_task(conn, schedule_id, task)
        await self.submit.enqueue_pending(fired.tasks)
        metrics.SCHEDULE_FIRES.labels(TRIGGERED).inc()
        fired_at = rfc3339(fired.fired_at[now]) or ""
        return FireView(rfc3339(now) or "", "triggered", str(task) if task else None, fired_at)

    async def backfill(
        self, schedule_id: uuid.UUID, tenant: str | None, req: BackfillRequest
    ) -> BackfillResult | None:
        """The schedule's instants in [from, to]; unless a dry run, fire those not recorded yet
        (overlap is not applied: a backfill asks for every one of them)."""
        _check_backfill(req, _now(self.clock))
        async with self.store.transaction() as conn:
            row = await self.store.lock(conn, schedule_id, tenant)
            if row is None:
                return None
            found = timing_of(row).between(req.start, req.to, MAX_BACKFILL + 1)
            instants = found[:MAX_BACKFILL]
            before = {
                r["instant"]: r for r in await self.store.recorded(conn, schedule_id, instants)
            }
            created: dict[datetime, uuid.UUID | None] = {}
            tasks: list[asyncpg.Record] = []
            if not req.dry_run:
                now = _now(self.clock)
                specs = [FireSpec(t, BACKFILLED, True, now) for t in instants if t not in before]
                fired = await self.store.record_fires(conn, row, specs)
                created = {instant: task for instant, _, task in fired.fires}
                tasks = fired.tasks
        await self.submit.enqueue_pending(tasks)
        if created:
            metrics.SCHEDULE_FIRES.labels(BACKFILLED).inc(len(created))
        return BackfillResult(
            dry_run=req.dry_run,
            fires=[_backfill_fire(t, before.get(t), created) for t in instants],
            truncated=len(found) > MAX_BACKFILL,
        )


def _backfill_fire(
    instant: datetime, before: asyncpg.Record | None, created: dict[datetime, uuid.UUID | None]
) -> BackfillFire:
    if instant in created:
        task = created[instant]
        return BackfillFire(rfc3339(instant) or "", True, "backfilled", str(task) if task else None)
    if before is not None:
        task = before["task_id"]
        return BackfillFire(
            rfc3339(instant) or "", False, before["outcome"], str(task) if task else None
        )
    return BackfillFire(rfc3339(instant) or "", False, None, None)


def _check_backfill(req: BackfillRequest, now: datetime) -> None:
    for name, value in (("from", req.start), ("to", req.to)):
        if value.tzinfo is None:
            raise validation_error([problem(name, "needs a time zone offset (e.g. Z)")])
    if req.to < req.start:
        raise validation_error([problem("to", "is before from")])
    if req.to > now:
        raise validation_error([problem("to", "a backfill covers past instants only")])


def _check_range(value: datetime | None, name: str) -> None:
    if value is not None and not EARLIEST_TIME <= value <= LATEST_TIME:
        raise InvalidSchedule(name, "must be from 1970-01-01 to 9999-12-31 (UTC)")


def _merge(row: asyncpg.Record, patch: SchedulePatch) -> dict[str, Any]:
    fields = (
        "name",
        "cron",
        "every",
        "timezone",
        "task",
        "overlap",
        "catchup",
        "catchup_window",
        "max_catchup_runs",
        "jitter",
        "start_at",
        "end_at",
        "paused",
    )
    merged = {f: row[f] for f in fields}
    given = {f: getattr(patch, f) for f in fields if getattr(patch, f) is not msgspec.UNSET}
    if "cron" in given and given["cron"] is not None:
        merged["every"] = None
    if "every" in given and given["every"] is not None:
        merged["cron"] = None
    for f, value in given.items():
        merged[f] = msgspec.to_builtins(value) if f == "task" else value
    return merged


def _convert(data: Mapping[str, Any]) -> ScheduleSubmission:
    """A submission from stored or declared fields (they passed the same checks before)."""
    try:
        return msgspec.convert(dict(data), ScheduleSubmission, strict=False)
    except msgspec.ValidationError as e:
        raise validation_error([problem("body", str(e))]) from e
