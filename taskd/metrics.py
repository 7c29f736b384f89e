"""The one catalogue of Prometheus metrics. Nothing else constructs a metric.

The README's "Observability" section documents every metric here (a test keeps the two equal).
Labels are bounded: ``queue`` and ``type`` come from validated names (``^[a-z0-9_-]{1,64}$`` and
``^[A-Za-z0-9_.:-]{1,128}$``) chosen by operators, never from payloads or ids; ``state``,
``channel``, ``outcome``, ``result`` and ``dependency`` take a few fixed values.

Hot paths (the worker's per-task start, finish and record) use :func:`task_series`, which looks
the labelled children up once per (queue, type): a ``labels()`` call costs microseconds, a dict
hit tens of nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

_TASK = ("queue", "type")

# Task lifecycle, by queue and type.
TASKS_SUBMITTED = Counter("taskd_tasks_submitted_total", "Tasks accepted by the API.", _TASK)
TASKS_STARTED = Counter("taskd_tasks_started_total", "Attempts started by workers.", _TASK)
TASKS_SUCCEEDED = Counter("taskd_tasks_succeeded_total", "Tasks that ended in SUCCESS.", _TASK)
TASKS_FAILED = Counter("taskd_tasks_failed_total", "Tasks that ended in FAILED.", _TASK)
TASKS_RETRIED = Counter(
    "taskd_tasks_retried_total", "Attempts that failed and were scheduled again.", _TASK
)
TASKS_CANCELLED = Counter(
    "taskd_tasks_cancelled_total", "Tasks cancelled before they finished.", _TASK
)
TASKS_DEAD_LETTERED = Counter(
    "taskd_tasks_dead_lettered_total",
    "Tasks that failed for good and were written to the dead-letter outbox.",
    _TASK,
)
TASK_RUN_SECONDS = Histogram(
    "taskd_task_run_seconds",
    "Handler run time per attempt.",
    _TASK,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
TASK_WAIT_SECONDS = Histogram(
    "taskd_task_wait_seconds",
    "Time from when an attempt was due (run_at) to when a worker started it.",
    _TASK,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)

# Queues, exported by the promoter (several promoters export the same values: use max by queue).
QUEUE_DEPTH = Gauge(
    "taskd_queue_depth",
    "Tasks in Redis by state: ready (due, including due ones not yet moved out of the delayed "
    "set), delayed (not due yet), active (leased).",
    ("queue", "state"),
)
QUEUE_OLDEST_READY_AGE = Gauge(
    "taskd_queue_oldest_ready_age_seconds",
    "How long the longest-waiting due task of the queue has been due (0 when none is).",
    ("queue",),
)

# Workers (per process: one worker per process outside tests).
WORKER_IN_FLIGHT = Gauge("taskd_worker_in_flight", "Handlers running in this worker.")
WORKER_FREE_SLOTS = Gauge("taskd_worker_free_slots", "Free execution slots in this worker.")
WORKER_SLOTS = Gauge(
    "taskd_worker_slots", "Execution slots (concurrency) of this worker; 0 in other roles."
)
WORKER_OUTCOME_BACKLOG = Gauge(
    "taskd_worker_outcome_backlog", "Outcomes held in memory waiting to be recorded."
)

# Leases and repairs.
LEASES_LOST = Counter(
    "taskd_leases_lost_total", "Heartbeats that found the lease held by another worker.", ("queue",)
)
LEASES_REAPED = Counter(
    "taskd_leases_reaped_total", "Expired leases reclaimed by the promoter.", ("queue",)
)
RESCUED = Counter(
    "taskd_rescued_total", "RUNNING tasks reclaimed because their lease vanished from Redis."
)
RECONCILED = Counter(
    "taskd_reconciled_total", "PENDING tasks re-queued because Redis did not have them."
)
STALE_WRITES = Counter(
    "taskd_stale_writes_rejected_total",
    "Outcomes a worker could not record because its lease had been reclaimed (the fence held).",
)

# Dead letters (the promoter's outbox publisher), notifications and configuration reloads
# (declared now, emitted once the notifier and config reload land).
DLQ_BACKLOG = Gauge("taskd_dlq_unpublished", "Dead letters waiting in the outbox to be published.")
DLQ_PUBLISHED = Counter("taskd_dlq_published_total", "Dead letters published to the DLQ sink.")
DLQ_PUBLISH_FAILURES = Counter(
    "taskd_dlq_publish_failures_total",
    "Publish passes that failed: the sink was unreachable or refused the batch.",
)
NOTIFICATIONS = Counter(
    "taskd_notifications_total",
    "Notification delivery attempts by channel (email, webhook) and outcome (delivered; failed: "
    "will be retried; abandoned: retries spent).",
    ("channel", "outcome"),
)
NOTIFY_BACKLOG = Gauge(
    "taskd_notify_outbox_backlog", "Notifications waiting in the outbox to be delivered."
)
CONFIG_RELOADS = Counter(
    "taskd_config_reloads_total",
    "Configuration reloads by result (applied; rejected: invalid and ignored, the running "
    "snapshot stays; failed: a source such as SSM could not be read).",
    ("result",),
)

# Schedules (the promoter's firer; trigger and backfill through the API).
SCHEDULE_FIRES = Counter(
    "taskd_schedule_fires_total",
    "Schedule fire instants recorded, by outcome (enqueued, caught_up, skipped_overlap, missed, "
    "triggered, backfilled).",
    ("outcome",),
)
SCHEDULE_LAG = Histogram(
    "taskd_schedule_lag_seconds",
    "How late the promoter created a scheduled run's task: now minus the fire instant, 0 when "
    "it was created ahead of its instant.",
    buckets=(0, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
)

# Dependencies and the API.
DEPENDENCY_UP = Gauge(
    "taskd_dependency_up", "1 when the dependency answered its last check.", ("dependency",)
)
HTTP_REQUESTS = Counter(
    "taskd_http_requests_total", "API requests by route and status.", ("method", "route", "status")
)
HTTP_SECONDS = Histogram(
    "taskd_http_request_seconds",
    "API request latency by route.",
    ("method", "route"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)


@dataclass(frozen=True, slots=True)
class TaskSeries:
    """The labelled children of the per-task metrics for one (queue, type)."""

    submitted: Counter
    started: Counter
    succeeded: Counter
    failed: Counter
    retried: Counter
    run_seconds: Histogram
    wait_seconds: Histogram


_series: dict[tuple[str, str], TaskSeries] = {}


def task_series(queue: str, type_: str) -> TaskSeries:
    """The children for ``(queue, type_)``, created on first use and cached (bounded labels)."""
    found = _series.get((queue, type_))
    if found is None:
        found = TaskSeries(
            submitted=TASKS_SUBMITTED.labels(queue, type_),
            started=TASKS_STARTED.labels(queue, type_),
            succeeded=TASKS_SUCCEEDED.labels(queue, type_),
            failed=TASKS_FAILED.labels(queue, type_),
            retried=TASKS_RETRIED.labels(queue, type_),
            run_seconds=TASK_RUN_SECONDS.labels(queue, type_),
            wait_seconds=TASK_WAIT_SECONDS.labels(queue, type_),
        )
        _series[(queue, type_)] = found
    return found
