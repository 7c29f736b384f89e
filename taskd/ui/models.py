"""What each page shows, read once and shared by the first render and the live updates."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from taskd.api.explain import Explanation, explain
from taskd.queue.presence import WorkerInfo
from taskd.ui.graph_svg import MAX_NODES, Layout, layout
from taskd.ui.state import UiState

LIVE = ("WAITING", "PENDING", "RUNNING")
RETRYABLE = ("FAILED", "CANCELLED", "UPSTREAM_FAILED")
# Banners look at this much of the recent past.
RECENT_SECONDS = 900.0


@dataclass
class QueueRow:
    name: str
    ready: int = 0
    delayed: int = 0
    running: int = 0
    waiting: int | None = None  # tenants see their WAITING tasks; Redis does not know them
    dead: int = 0
    oldest_age: float = 0.0
    ok: list[int] = field(default_factory=lambda: [0] * 60)
    failed: list[int] = field(default_factory=lambda: [0] * 60)

    @property
    def spark_ok(self) -> str:
        return sparkline(self.ok, max(max(self.ok), max(self.failed), 1))

    @property
    def spark_failed(self) -> str:
        return sparkline(self.failed, max(max(self.ok), max(self.failed), 1))

    @property
    def last_hour(self) -> tuple[int, int]:
        return sum(self.ok), sum(self.failed)


@dataclass
class Overview:
    queues: list[QueueRow]
    workers: list[WorkerInfo]
    lost_recently: int
    dead_recently: int

    @property
    def slots(self) -> int:
        return sum(w.slots for w in self.workers)

    @property
    def busy(self) -> int:
        return sum(w.in_flight for w in self.workers)


def sparkline(values: list[int], top: int, width: int = 120, height: int = 24) -> str:
    """SVG polyline points for ``values`` (oldest first) scaled into width × height."""
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )


async def overview(ui: UiState, tenant: str | None) -> Overview:
    rows: dict[str, QueueRow] = {}
    if tenant is None:
        for name in await ui.api.store.known_queues():
            s = await ui.api.queue.stats(name)
            rows[name] = QueueRow(name, s.ready, s.delayed, s.active, None, 0, s.oldest_ready_age)
        dead = await ui.cache.get(("dead", None), 10, ui.store.failed_by_queue)
        for name, n in dead.items():
            rows.setdefault(name, QueueRow(name)).dead = n
    else:
        now = datetime.now(UTC)
        for name, c in (await ui.store.tenant_queue_counts(tenant)).items():
            delayed = c.get("delayed", 0)
            oldest = c["oldest_due"]
            rows[name] = QueueRow(
                name,
                ready=c.get("PENDING", 0) - delayed,
                delayed=delayed,
                running=c.get("RUNNING", 0),
                waiting=c.get("WAITING", 0),
                dead=c.get("FAILED", 0),
                oldest_age=(now - oldest).total_seconds() if oldest else 0.0,
            )
    sparks = ui.sparks.setdefault(tenant, Sparks())
    await ui.cache.get(("spark", tenant), 15, lambda: sparks.refresh(ui, tenant))
    for name, (ok, failed) in sparks.series().items():
        row = rows.setdefault(name, QueueRow(name))
        row.ok, row.failed = ok, failed
    lost, dead_recent = await ui.cache.get(
        ("recent", tenant), 10, lambda: ui.store.recent_activity(RECENT_SECONDS, tenant)
    )
    workers = await ui.presence.live()
    return Overview(sorted(rows.values(), key=lambda r: r.name), workers, lost, dead_recent)


@dataclass
class Sparks:
    """Attempts per queue and minute over the last hour, counted incrementally: each refresh
    asks only for the minutes since the last complete one, so a busy hour is read once."""

    buckets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    complete_until: int = 0  # minutes before this one are counted for good

    async def refresh(self, ui: UiState, tenant: str | None) -> None:
        now_minute = int(time.time()) // 60 * 60
        since = max(self.complete_until, now_minute - 3540)
        fresh = await ui.store.throughput(tenant, since)
        self.buckets = {k: v for k, v in self.buckets.items() if now_minute - 3540 <= k[1] < since}
        self.buckets.update(fresh)
        self.complete_until = now_minute

    def series(self) -> dict[str, tuple[list[int], list[int]]]:
        """``{queue: (succeeded, failed)}`` per minute, the oldest of the 60 first."""
        first = self.complete_until - 3540
        out: dict[str, tuple[list[int], list[int]]] = {}
        for (queue, minute), (ok, failed) in self.buckets.items():
            i = (minute - first) // 60
            if 0 <= i < 60:
                series = out.setdefault(queue, ([0] * 60, [0] * 60))
                series[0][i], series[1][i] = ok, failed
        return out


@dataclass
class TaskLive:
    """The part of the Task page that changes while the task moves."""

    row: asyncpg.Record
    attempts: list[asyncpg.Record]
    why: Explanation

    @property
    def live(self) -> bool:
        return str(self.row["status"]) in LIVE

    @property
    def retryable(self) -> bool:
        return str(self.row["status"]) in RETRYABLE


async def task_live(ui: UiState, task_id: uuid.UUID, tenant: str | None) -> TaskLive | None:
    row = await ui.api.store.get(task_id, tenant)
    if row is None:
        return None
    attempts = await ui.store.attempts(task_id)
    return TaskLive(row, attempts, await explain(row, ui.store, ui.presence))


@dataclass
class DagModel:
    dag: asyncpg.Record
    tasks: list[asyncpg.Record]
    layout: Layout | None  # None past MAX_NODES: the page shows a table
    status: str
    failed: int

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tasks:
            out[t["status"]] = out.get(t["status"], 0) + 1
        return dict(sorted(out.items()))


async def dag_model(ui: UiState, dag_id: uuid.UUID, tenant: str | None) -> DagModel | None:
    from taskd.api.dag_routes import aggregate_status

    stored = await ui.dags.get(dag_id, tenant)
    if stored is None:
        return None
    key_of = {t["id"]: t["dag_key"] or str(t["id"]) for t in stored.tasks}
    picture = None
    if len(stored.tasks) <= MAX_NODES:
        nodes = [(key_of[t["id"]], str(t["id"]), t["status"], t["type"]) for t in stored.tasks]
        edges = [(key_of[p], key_of[c]) for p, c in stored.edges if p in key_of and c in key_of]
        picture = layout(nodes, edges)
    statuses = [t["status"] for t in stored.tasks]
    failed = sum(s in ("FAILED", "CANCELLED") for s in statuses)
    return DagModel(stored.dag, stored.tasks, picture, aggregate_status(statuses), failed)
