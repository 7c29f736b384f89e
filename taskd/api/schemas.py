"""Request and response shapes (msgspec), validated exactly as API.md describes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

TaskType = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
QueueName = Annotated[str, Meta(pattern=r"^[a-z0-9_-]{1,64}$")]
Priority = Annotated[int, Meta(ge=-100, le=100)]
# A century: ``now() + delay`` must stay a time that Postgres and Python can both represent.
MAX_DELAY_SECONDS = 100 * 365.25 * 86400
Delay = Annotated[float, Meta(ge=0, le=MAX_DELAY_SECONDS)]
PositiveSeconds = Annotated[float, Meta(gt=0)]
# Times the API accepts (run_at) or clamps filters to: what Python, asyncpg and Postgres all
# represent, with nothing older than the Unix epoch (which also keeps Redis scores sane).
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime.max.replace(tzinfo=UTC)
# Payload nesting: well below msgspec's recursion limit, so every reader can decode what we store.
MAX_PAYLOAD_DEPTH = 128
MaxRetries = Annotated[int, Meta(ge=0, le=100)]
IdemKey = Annotated[str, Meta(min_length=1, max_length=255)]
LabelKey = Annotated[str, Meta(min_length=1, max_length=63)]
LabelValue = Annotated[str, Meta(max_length=255)]
STATUSES = ("WAITING", "PENDING", "RUNNING", "SUCCESS", "FAILED", "CANCELLED", "UPSTREAM_FAILED")
Status = Literal[
    "WAITING", "PENDING", "RUNNING", "SUCCESS", "FAILED", "CANCELLED", "UPSTREAM_FAILED"
]


class BackoffSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    base: Annotated[float, Meta(ge=0, le=86400)] | None = None
    factor: Annotated[float, Meta(ge=1, le=100)] | None = None
    max: Annotated[float, Meta(ge=0, le=7 * 86400)] | None = None
    jitter: Literal["full", "none"] | None = None


class NotifySpec(msgspec.Struct, forbid_unknown_fields=True):
    on: list[Literal["SUCCESS", "FAILED"]] = msgspec.field(
        default_factory=lambda: ["SUCCESS", "FAILED"]
    )
    email: Annotated[list[Annotated[str, Meta(max_length=254)]], Meta(max_length=20)] = (
        msgspec.field(default_factory=list)
    )
    webhook: Annotated[str, Meta(max_length=2048)] | None = None


class TaskSubmission(msgspec.Struct, forbid_unknown_fields=True):
    type: TaskType
    payload: Any = msgspec.field(default_factory=dict)
    queue: QueueName = "default"
    priority: Priority = 0
    delay: Delay | None = None
    run_at: datetime | None = None
    max_retries: MaxRetries | None = None
    backoff: BackoffSpec | None = None
    timeout: PositiveSeconds | None = None
    idempotency_key: IdemKey | None = None
    depends_on: Annotated[list[str], Meta(max_length=1000)] = msgspec.field(default_factory=list)
    notify: NotifySpec | None = None
    labels: Annotated[dict[LabelKey, LabelValue], Meta(max_length=64)] = msgspec.field(
        default_factory=dict
    )


class BatchSubmission(msgspec.Struct, forbid_unknown_fields=True):
    tasks: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=1000)]


class ErrorDoc(msgspec.Struct):
    type: str
    message: str
    retryable: bool


class AttemptView(msgspec.Struct):
    attempt: int
    worker: str | None
    started_at: str | None
    finished_at: str | None
    outcome: Literal["SUCCESS", "ERROR", "TIMEOUT", "LOST", "CANCELLED"]
    error: ErrorDoc | None


class TaskView(msgspec.Struct):
    id: str
    type: str
    queue: str
    priority: int
    status: Status
    payload: Any
    labels: dict[str, str]
    attempts: int
    max_retries: int
    timeout: float
    run_at: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: Any
    error: ErrorDoc | None
    depends_on: list[str]
    dag_id: str | None
    idempotency_key: str | None
    notify: NotifySpec | None
    attempt_history: list[AttemptView] | msgspec.UnsetType = msgspec.UNSET


class TaskList(msgspec.Struct):
    items: list[TaskView]
    next_cursor: str | None


class BatchResult(msgspec.Struct):
    items: list[TaskView]


class ErrorDetail(msgspec.Struct):
    field: str
    problem: str


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


DagKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


class DagTaskSubmission(TaskSubmission, kw_only=True):
    """A task of a DAG: the task fields plus its ``key``; ``depends_on`` names keys or ids."""

    key: DagKey


class DagSubmission(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    tasks: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=10_000)]


class EdgeView(msgspec.Struct, rename={"parent": "from", "child": "to"}):
    parent: str
    child: str


class DagView(msgspec.Struct):
    id: str
    name: str
    status: Literal["RUNNING", "SUCCESS", "FAILED"]
    created_at: str
    tasks: dict[str, TaskView]
    edges: list[EdgeView] | msgspec.UnsetType = msgspec.UNSET
