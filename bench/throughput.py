"""Processing throughput: N no-op tasks already queued, one worker process, until all SUCCESS.

    python -m bench.throughput [--tasks 20000] [--concurrency 200]

Prints tasks/s and the CPU seconds per 1,000 tasks of the worker, Postgres and Redis. Uses the
local Postgres and Redis (TASKD_TEST_DATABASE__URL / TASKD_TEST_REDIS__URL), in a scratch database
and a scratch queue.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from taskd.ids import uuid7
from taskd.queue.client import Enqueue, RedisQueue
from taskd.store.migrate import migrate

ADMIN_URL = os.environ.get("TASKD_TEST_DATABASE__URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TASKD_TEST_REDIS__URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(name: str) -> float:
    """Total user+system CPU seconds of the processes called ``name`` (e.g. postgres)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.index("(") + 1 : text.rindex(")")] == name:
            total += proc_cpu(int(stat.parent.name))
    return total


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def prepare(url: str, queue_name: str, n: int) -> None:
    conn = await asyncpg.connect(url)
    await migrate(conn)
    ids = [uuid7() for _ in range(n)]
    now = await conn.fetchval("SELECT now()")
    await conn.copy_records_to_table(
        "tasks",
        records=[(i, "bench", "bench.noop", queue_name, "PENDING", now) for i in ids],
        columns=["id", "tenant", "type", "queue", "status", "run_at"],
    )
    await conn.execute("INSERT INTO queues (name) VALUES ($1)", queue_name)
    await conn.execute("ANALYZE tasks")
    await conn.close()
    queue = RedisQueue.from_url(REDIS_URL)
    for start in range(0, n, 1000):
        await queue.enqueue(queue_name, [Enqueue(str(i), 0, 0) for i in ids[start : start + 1000]])
    await queue.close()


async def wait_done(url: str, n: int) -> float:
    conn = await asyncpg.connect(url)
    started = time.monotonic()
    while await conn.fetchval("SELECT count(*) FROM tasks WHERE status = 'SUCCESS'") < n:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    await conn.close()
    return elapsed


async def main(n: int, concurrency: int) -> None:
    name = f"taskd_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    queue_name = f"bench-{secrets.token_hex(4)}"
    try:
        await prepare(url, queue_name, n)
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
        pg0, redis0 = cpu_seconds("postgres"), cpu_seconds("redis-server")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskd",
                "--role",
                "worker",
                "--handlers",
                "bench.handlers",
                "--concurrency",
                str(concurrency),
            ],
            env=env,
            cwd=ROOT,
        )
        elapsed = await wait_done(url, n)
        worker_cpu = proc_cpu(worker.pid)
        pg1, redis1 = cpu_seconds("postgres"), cpu_seconds("redis-server")
        worker.terminate()
        worker.wait(30)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    per_k = 1000 / n
    print(f"\nprocessing: {n} no-op tasks, 1 worker process, --concurrency {concurrency}")
    print(
        f"{'tasks/s':>10} {'worker CPU s/1k':>16} {'Postgres CPU s/1k':>18} {'Redis CPU s/1k':>15}"
    )
    print(
        f"{n / elapsed:>10,.0f} {worker_cpu * per_k:>16.3f} {(pg1 - pg0) * per_k:>18.3f} "
        f"{(redis1 - redis0) * per_k:>15.3f}"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=200)
    a = p.parse_args()
    asyncio.run(main(a.tasks, a.concurrency))
