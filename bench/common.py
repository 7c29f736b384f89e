"""What the benchmarks share: the local Postgres and Redis they use, scratch databases, CPU
accounting from /proc, free ports."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from taskd.store.migrate import migrate

ADMIN_URL = os.environ.get("TASKD_TEST_DATABASE__URL", "postgresql://postgres@127.0.0.1:5432/test")
# Benchmark queues live in Redis db 9, away from what tests (and people) use in db 0.
REDIS_URL = os.environ.get("TASKD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
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


def box_cpu() -> tuple[float, float]:
    """(busy, elapsed) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def other_cores(box0: tuple[float, float], box1: tuple[float, float], ours: float) -> float:
    """Cores used, on average, by processes other than the benchmark's own meanwhile (other
    people's work on a shared machine: a figure measured while it is high is not comparable)."""
    busy, total = box1[0] - box0[0], box1[1] - box0[1]
    wall = total / (os.cpu_count() or 1)
    return max(busy - ours, 0.0) / wall if wall > 0 else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A migrated database of its own, dropped afterwards; yields its URL."""
    name = f"taskd_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
