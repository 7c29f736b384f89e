"""``python -m bench``: every taskd benchmark of issue 9 in one run, then a table against the
targets; with ``--peers``, the same workloads for arq, saq, celery, dramatiq, taskiq and
procrastinate, and taskd's ratio to each.

    python -m bench [--tasks 20000] [--backlog 10000,100000,1000000] [--peers] [--quick]

Processing (bench/throughput.py), submit (bench/submit.py, needs ``wrk``), latency
(bench/latency.py), its floor (bench/floor.py: the same hops with nothing else) and the backlog
series run one after the other on the local Postgres and Redis; nothing else should be using
the machine meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench import floor, latency, submit
from bench.throughput import Processing, print_processing, run_processing


@dataclass(frozen=True)
class Figure:
    what: str
    value: float
    unit: str
    target: str
    met: bool | None  # None: no target

    def row(self) -> str:
        mark = {True: "met", False: "MISSED", None: ""}[self.met]
        digits = {"ms": 2, "s": 3, "x": 1}.get(self.unit, 0)
        value = f"{self.value:>10,.{digits}f}"
        return f"{self.what:<58} {value} {self.unit:<8} {self.target:<10} {mark}"


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = _version(["psql", "--version"])
    redis = _version(["redis-server", "--version"])
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {pg}, {redis}"


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return f"{argv[0]} not found"
    return " ".join(out.split()[:3])


def processing_runs(tasks: int, backlog: list[int]) -> tuple[list[Processing], list[Processing]]:
    one = asyncio.run(run_processing(tasks, workers=1))
    two = asyncio.run(run_processing(tasks, workers=2))
    series = [asyncio.run(run_processing(n, workers=1)) for n in backlog]
    return [one, two], series


def figures(
    proc: list[Processing], sub: dict[str, Any] | None, lat: dict[str, Any], bare: dict[str, Any]
) -> list[Figure]:
    one, two = proc
    out = [
        Figure("processing, 1 worker, --concurrency 200", one.tasks_per_second, "tasks/s",
               ">= 10,000", one.tasks_per_second >= 10_000),
        Figure("processing, 2 worker processes", two.tasks_per_second, "tasks/s", "", None),
    ]  # fmt: skip
    if sub is not None:
        single = sub["single"]["requests_per_s"]
        batch = max(sub["batch_1"]["tasks_per_s"], sub["batch_4"]["tasks_per_s"])
        out += [
            Figure("submit, single POST /v1/tasks, 64 connections", single, "req/s",
                   ">= 2,000", single >= 2_000),
            Figure("submit, POST /v1/tasks/batch x1000 (best of 1, 4 clients)", batch,
                   "tasks/s", ">= 20,000", batch >= 20_000),
        ]  # fmt: skip
    p50 = lat["submit_to_start"]["p50_ms"]
    p99 = lat["submit_to_start"]["p99_ms"]
    out += [
        Figure(f"latency submit -> start p50 at {lat['rate']:g}/s", p50, "ms", "<= 2", p50 <= 2),
        Figure(f"latency submit -> start p99 at {lat['rate']:g}/s", p99, "ms", "<= 10", p99 <= 10),
        Figure(
            "  the same hops bare (bench/floor.py), p50",
            bare["submit_to_start"]["p50_ms"],
            "ms",
            "",
            None,
        ),
        Figure("worker CPU per 1,000 tasks", one.worker_cpu_per_1k, "s", "", None),
        Figure("Postgres CPU per 1,000 tasks", one.pg_cpu_per_1k, "s", "", None),
        Figure("Redis CPU per 1,000 tasks", one.redis_cpu_per_1k, "s", "", None),
    ]
    return out


def print_summary(rows: list[Figure]) -> None:
    print("\nsummary against issue 9's targets")
    print(f"{'':<58} {'measured':>10} {'':<8} {'target':<10}")
    for r in rows:
        print(r.row())


def print_peers(taskd_tps: float, rows: list[dict[str, Any]], tasks: int) -> bool:
    """taskd's processing throughput against each peer's; True if ahead of every one."""
    from bench.peers.__main__ import print_table

    print_table(rows, tasks)
    print(f"\ntaskd processing {taskd_tps:,.0f} tasks/s (durable: every outcome in Postgres)")
    print(f"{'peer':<14} {'tasks/s':>9} {'taskd / peer':>13}")
    ahead = True
    for row in rows:
        tps = row.get("processing_tps")
        if tps:
            print(f"{row['name']:<14} {tps:>9,.0f} {taskd_tps / tps:>12.1f}x")
            ahead = ahead and taskd_tps > tps
        else:
            print(f"{row['name']:<14} {'failed':>9} {'':>13}")
    return ahead


def main() -> None:
    a = parse_args()
    print(f"taskd benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — {machine()}")
    backlog = [] if a.quick else [int(x) for x in a.backlog.split(",") if x]
    proc, series = processing_runs(a.tasks, backlog)
    print(f"\nprocessing: {a.tasks:,} no-op tasks queued, --concurrency 200")
    print_processing(proc)
    sub = None
    if shutil.which("wrk"):
        sub = submit.measure()
        submit.print_table(sub)
    else:
        print(f"\nsubmit: skipped. {submit.WRK_MISSING}")
    lat = latency.measure()
    latency.print_table(lat)
    bare = floor.measure()
    floor.print_floor(bare)
    if series:
        print("\nbacklog series: all of N queued tasks processed by 1 worker")
        print_processing(series)
    rows = figures(proc, sub, lat, bare)
    if a.peers:
        from bench.peers import run_peers

        peer_rows = run_peers(a.tasks, None)
        ahead = print_peers(proc[0].tasks_per_second, peer_rows, a.tasks)
        rows.append(
            Figure("processing, taskd / best peer", proc[0].tasks_per_second
                   / max([r["processing_tps"] or 1.0 for r in peer_rows] or [1.0]),
                   "x", "> 1", ahead)
        )  # fmt: skip
    print_summary(rows)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=20_000, help="queued tasks per processing run")
    p.add_argument("--backlog", default="10000,100000,1000000", help="backlog series sizes")
    p.add_argument("--peers", action="store_true", help="also run the peer task queues")
    p.add_argument("--quick", action="store_true", help="skip the backlog series")
    return p.parse_args()


if __name__ == "__main__":
    main()
