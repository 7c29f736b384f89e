"""The one catalogue of Prometheus metrics. Nothing else constructs a metric.

Labels are bounded: ``queue`` and ``type`` come from validated names (``^[a-z0-9_-]{1,64}$`` and
``^[A-Za-z0-9_.:-]{1,128}$``) chosen by operators, never from payloads or ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_TASK = ("queue", "type")

TASKS_SUBMITTED = Counter("taskd_tasks_submitted_total", "Tasks accepted by the API.", _TASK)
TASKS_STARTED = Counter("taskd_tasks_started_total", "Attempts started by workers.", _TASK)
TASKS_SUCCEEDED = Counter("taskd_tasks_succeeded_total", "Tasks that ended in SUCCESS.", _TASK)
TASKS_FAILED = Counter("taskd_tasks_failed_total", "Tasks that ended in FAILED.", _TASK)
TASKS_RETRIED = Counter(
    "taskd_tasks_retried_total", "Attempts that failed and were scheduled again.", _TASK
)
TASK_RUN_SECONDS = Histogram(
    "taskd_task_run_seconds",
    "Handler run time per attempt.",
    _TASK,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
STALE_WRITES = Counter(
    "taskd_stale_writes_rejected_total",
    "Outcomes a worker could not record because its lease had been reclaimed (the fence held).",
)
WORKER_IN_FLIGHT = Gauge("taskd_worker_in_flight", "Handlers running in this worker.")
WORKER_FREE_SLOTS = Gauge("taskd_worker_free_slots", "Free execution slots in this worker.")
WORKER_OUTCOME_BACKLOG = Gauge(
    "taskd_worker_outcome_backlog", "Outcomes held in memory waiting to be recorded."
)
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
