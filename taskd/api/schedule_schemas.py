"""Request and response shapes of the /v1/schedules routes (msgspec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from taskd.api.schemas import (
    BackoffSpec,
    LabelKey,
    LabelValue,
    MaxRetries,
    NotifySpec,
    PositiveSeconds,
    Priority,
    QueueName,
    TaskSubmission,
    TaskType,
)
from taskd.schedule.cron import MAX_EXPRESSION_LENGTH, MAX_ZONE_LENGTH
from taskd.schedule.policy import MAX_CATCHUP_RUNS, MAX_CATCHUP_WINDOW, MAX_JITTER
from taskd.schedule.timing import MAX_EVERY_SECONDS, MIN_EVERY_SECONDS

ScheduleName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
CronText = Annotated[str, Meta(max_length=MAX_EXPRESSION_LENGTH)]
Every = Annotated[float, Meta(ge=MIN_EVERY_SECONDS, le=MAX_EVERY_SECONDS)]
ZoneName = Annotated[str, Meta(max_length=MAX_ZONE_LENGTH)]
OverlapName = Literal["skip", "buffer_one", "allow", "cancel_previous"]
CatchupName = Literal["latest", "none", "all"]
Window = Annotated[float, Meta(ge=0, le=MAX_CATCHUP_WINDOW)]
CatchupRuns = Annotated[int, Meta(ge=1, le=MAX_CATCHUP_RUNS)]
Jitter = Annotated[float, Meta(ge=0, le=MAX_JITTER)]
FireOutcome = Literal[
    "enqueued", "caught_up", "skipped_overlap", "missed", "triggered", "backfilled"
]
MAX_BACKFILL = 1000


class TaskTemplate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The task each fire creates: a task submission without its timing, key or dependencies
    (a fire's task runs at the fire instant and carries the key ``sched:<id>:<instant>``)."""

    type: TaskType
    payload: Any = msgspec.field(default_factory=dict)
    queue: QueueName = "default"
    priority: Priority = 0
    max_retries: MaxRetries | None = None
    backoff: BackoffSpec | None = None
    timeout: PositiveSeconds | None = None
    notify: NotifySpec | None = None
    labels: Annotated[dict[LabelKey, LabelValue], Meta(max_length=64)] = msgspec.field(
        default_factory=dict
    )

    def submission(self) -> TaskSubmission:
        return TaskSubmission(
            type=self.type,
            payload=self.payload,
            queue=self.queue,
            priority=self.priority,
            max_retries=self.max_retries,
            backoff=self.backoff,
            timeout=self.timeout,
            notify=self.notify,
            labels=self.labels,
        )


class ScheduleSubmission(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: ScheduleName
    cron: CronText | None = None
    every: Every | None = None
    timezone: ZoneName = "UTC"
    task: TaskTemplate
    overlap: OverlapName = "skip"
    catchup: CatchupName = "latest"
    catchup_window: Window = 3600.0
    max_catchup_runs: CatchupRuns = 10
    jitter: Jitter = 0.0
    start_at: datetime | None = None
    end_at: datetime | None = None
    paused: bool = False


class SchedulePatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """PATCH: the fields present replace the stored ones; ``null`` clears the nullable ones.
    Giving ``cron`` clears ``every`` and the other way round."""

    name: ScheduleName | UnsetType = UNSET
    cron: CronText | UnsetType | None = UNSET
    every: Every | UnsetType | None = UNSET
    timezone: ZoneName | UnsetType = UNSET
    task: TaskTemplate | UnsetType = UNSET
    overlap: OverlapName | UnsetType = UNSET
    catchup: CatchupName | UnsetType = UNSET
    catchup_window: Window | UnsetType = UNSET
    max_catchup_runs: CatchupRuns | UnsetType = UNSET
    jitter: Jitter | UnsetType = UNSET
    start_at: datetime | UnsetType | None = UNSET
    end_at: datetime | UnsetType | None = UNSET
    paused: bool | UnsetType = UNSET


class BackfillRequest(msgspec.Struct, forbid_unknown_fields=True, rename={"start": "from"}):
    start: datetime
    to: datetime
    dry_run: bool = True


class ScheduleView(msgspec.Struct):
    id: str
    name: str
    cron: str | None
    every: float | None
    timezone: str
    task: TaskTemplate
    overlap: OverlapName
    catchup: CatchupName
    catchup_window: float
    max_catchup_runs: int
    jitter: float
    start_at: str | None
    end_at: str | None
    paused: bool
    source: Literal["api", "config"]
    next_fire_at: str | None
    last_fire_at: str | None
    created_at: str
    updated_at: str
    # The next five fire instants (single-schedule answers only; not in lists).
    next_fires: list[str] | UnsetType = UNSET


class ScheduleList(msgspec.Struct):
    items: list[ScheduleView]
    next_cursor: str | None


class FireView(msgspec.Struct):
    instant: str
    outcome: FireOutcome
    task_id: str | None
    fired_at: str


class FireList(msgspec.Struct):
    items: list[FireView]
    next_cursor: str | None


class BackfillFire(msgspec.Struct):
    instant: str
    # This request created the fire (false: a dry run, or the instant was recorded before).
    created: bool
    # The instant's recorded outcome and task, if it has one (now or from before).
    outcome: FireOutcome | None
    task_id: str | None


class BackfillResult(msgspec.Struct):
    dry_run: bool
    fires: list[BackfillFire]
    # More instants lie in the range than one request handles (MAX_BACKFILL).
    truncated: bool
