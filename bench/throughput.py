"""Processing throughput: N no-op tasks already queued, worker processes, until all SUCCESS.

    python -m bench.throughput [--tasks 20000] [--concurrency 200] [--workers 1]

The tasks are committed PENDING in Postgres and queued in Redis before the first worker starts.
The clock runs from the first finished task to the last, so process start-up is not counted (the
peer benchmarks use the same rule). A task is finished when it has left Redis: the ack script runs
only after its SUCCESS committed in Postgres, which the end of the run checks as well. Prints
tasks/s and the CPU seconds per 1,000 tasks of the workers, Postgres and Redis. Uses the local
Postgres (TASKD_TEST_DATABASE__URL) in a scratch database, and Redis db 9
(TASKD_BENCH_REDIS_URL) under a scratch queue.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from bench.common import REDIS_URL, ROOT, cpu_seconds, proc_cpu, scratch_database
from taskd.ids import uuid7
from taskd.queue.client import Enqueue, RedisQueue
from taskd.queue.keys import QueueKeys

COPY_CHUNK = 100_000
# No task finished for this long once the run has started: the run is stuck, say so.
STALL_S = 60


@dataclass(frozen=True)
class Processing:
    tasks: int
    workers: int
    concurrency: int
    tasks_per_second: float
    worker_cpu_per_1k: float
    pg_cpu_per_1k: float
    redis_cpu_per_1k: float


async def prepare(url: str, queue_name: str, n: int) -> None:
    """``n`` PENDING rows (COPY) and their ids in the queue's ready set."""
    conn = await asyncpg.connect(url)
    ids = [uuid7() for _ in range(n)]
    now = await conn.fetchval("SELECT now()")
    for start in range(0, n, COPY_CHUNK):
        await conn.copy_records_to_table(
            "tasks",
            records=[
                (i, "bench", "bench.noop", queue_name, "PENDING", now)
                for i in ids[start : start + COPY_CHUNK]
            ],
            columns=["id", "tenant", "type", "queue", "status", "run_at"],
        )
    await conn.execute("INSERT INTO queues (name) VALUES ($1)", queue_name)
    await conn.execute("VACUUM ANALYZE tasks")
    await conn.close()
    queue = RedisQueue.from_url(REDIS_URL)
    for start in range(0, n, 1000):
        await queue.enqueue(queue_name, [Enqueue(str(i), 0, 0) for i in ids[start : start + 1000]])
    await queue.close()


def start_worker(url: str, queue_name: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TASKD_DATABASE__URL": url,
        "TASKD_REDIS__URL": REDIS_URL,
        "TASKD_WORKER__QUEUES": f"[{queue_name}]",
        "TASKD_LOG__LEVEL": "WARNING",
        "TASKD_WORKER__LEASE_BATCH": "200",
        "TASKD_OPS__PORT": "0",
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-m", "taskd", "--role", "worker", "--handlers", "bench.handlers"]
    return subprocess.Popen([*argv, "--concurrency", str(concurrency)], env=env, cwd=ROOT)


@dataclass(frozen=True)
class CpuSnapshot:
    workers: float
    postgres: float
    redis: float

    @staticmethod
    def take(pids: list[int]) -> CpuSnapshot:
        return CpuSnapshot(
            sum(proc_cpu(p) for p in pids), cpu_seconds("postgres"), cpu_seconds("redis-server")
        )


@dataclass(frozen=True)
class Window:
    """What happened between the first finished task and the last."""

    seconds: float
    tasks: int
    start: CpuSnapshot
    end: CpuSnapshot


def stop_workers(procs: list[subprocess.Popen[bytes]], grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL what has not stopped within ``grace_s`` (and say so: a worker
    must stop on SIGTERM, and a stuck one must not outlive the benchmark)."""
    for p in procs:
        p.terminate()
    stuck = []
    for p in procs:
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            stuck.append(p.pid)
    if stuck:
        raise RuntimeError(f"workers {stuck} did not stop within {grace_s:g} s of SIGTERM")


async def drain_window(queue_name: str, n: int, pids: list[int], limit_s: float) -> Window:
    """Watch the queue drain; the window opens when the first task has left it. Polled every
    2 ms until then, every 10 ms after (±1 % on a one-second run; faster polling takes CPU from
    the worker)."""
    r = aioredis.Redis.from_url(REDIS_URL)
    keys = QueueKeys(queue_name)
    deadline = time.monotonic() + limit_s
    first: tuple[float, int, CpuSnapshot] | None = None
    seen = (n, time.monotonic())  # tasks left, and since when
    try:
        while time.monotonic() < deadline:
            async with r.pipeline(transaction=False) as p:
                p.zcard(keys.ready)
                p.zcard(keys.active)
                ready, active = await p.execute()
            now, left = time.monotonic(), ready + active
            if first is None and left < n:
                first = (now, left, CpuSnapshot.take(pids))
            if left == 0 and first is not None:
                return Window(now - first[0], first[1], first[2], CpuSnapshot.take(pids))
            if left != seen[0]:
                seen = (left, now)
            elif first is not None and now - seen[1] > STALL_S:
                raise RuntimeError(f"stalled: {ready} ready and {active} active for {STALL_S} s")
            await asyncio.sleep(0.002 if first is None else 0.01)
    finally:
        await r.aclose()
    raise TimeoutError(f"{n} tasks not processed within {limit_s:.0f} s")


async def run_processing(n: int, concurrency: int = 200, workers: int = 1) -> Processing:
    """Tasks/s and CPU s per 1,000 tasks over the window from the first finished task to the
    last (the peer benchmarks measure the same window)."""
    queue_name = f"bench-{secrets.token_hex(4)}"
    async with scratch_database() as url:
        await prepare(url, queue_name, n)
        procs = [start_worker(url, queue_name, concurrency) for _ in range(workers)]
        try:
            w = await drain_window(queue_name, n, [p.pid for p in procs], limit_s=60 + n / 500)
        finally:
            stop_workers(procs)
        conn = await asyncpg.connect(url)
        done = await conn.fetchval("SELECT count(*) FROM tasks WHERE status = 'SUCCESS'")
        await conn.close()
        if done != n:
            raise RuntimeError(f"{done} of {n} tasks are SUCCESS in Postgres")
    per_k = 1000 / w.tasks
    return Processing(
        tasks=n,
        workers=workers,
        concurrency=concurrency,
        tasks_per_second=w.tasks / w.seconds,
        worker_cpu_per_1k=(w.end.workers - w.start.workers) * per_k,
        pg_cpu_per_1k=(w.end.postgres - w.start.postgres) * per_k,
        redis_cpu_per_1k=(w.end.redis - w.start.redis) * per_k,
    )


def print_processing(rows: list[Processing]) -> None:
    print(
        f"{'queued':>9} {'workers':>7} {'tasks/s':>9} {'worker CPU s/1k':>16} "
        f"{'Postgres CPU s/1k':>18} {'Redis CPU s/1k':>15}"
    )
    for r in rows:
        print(
            f"{r.tasks:>9,} {r.workers:>7} {r.tasks_per_second:>9,.0f} "
            f"{r.worker_cpu_per_1k:>16.3f} {r.pg_cpu_per_1k:>18.3f} {r.redis_cpu_per_1k:>15.3f}"
        )


async def main(n: int, concurrency: int, workers: int) -> None:
    result = await run_processing(n, concurrency, workers)
    print(f"\nprocessing: no-op tasks, --concurrency {concurrency}")
    print_processing([result])


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    asyncio.run(main(a.tasks, a.concurrency, a.workers))
