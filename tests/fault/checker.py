"""The invariants of DESIGN §6, checked over a whole run."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

TERMINAL = {"SUCCESS", "FAILED", "CANCELLED", "UPSTREAM_FAILED"}


@dataclass
class Report:
    tasks: int = 0
    succeeded: int = 0
    failed: int = 0
    lost_attempts: int = 0
    executions: int = 0
    problems: list[str] = field(default_factory=list)


async def check_run(pool: asyncpg.Pool, accepted: list[str], exec_log: Path | None) -> Report:
    """Every accepted task is terminal exactly once; attempts are unique, contiguous, and no
    handler started an attempt the task never recorded (nothing ran after it was terminal)."""
    report = Report(tasks=len(accepted))
    rows = {
        str(r["id"]): r
        for r in await pool.fetch(
            "SELECT id, status, attempt FROM tasks WHERE id = ANY($1::uuid[])", accepted
        )
    }
    history: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for h in await pool.fetch(
        "SELECT task_id, attempt, outcome FROM attempts WHERE task_id = ANY($1::uuid[])"
        " ORDER BY task_id, attempt",
        accepted,
    ):
        history[str(h["task_id"])].append(h)
    for tid in accepted:
        _check_task(tid, rows.get(tid), history[tid], report)
    if exec_log is not None:
        _check_executions(exec_log, rows, report)
    return report


def _check_task(
    tid: str, row: asyncpg.Record | None, hist: list[asyncpg.Record], report: Report
) -> None:
    p = report.problems
    if row is None:
        p.append(f"{tid}: accepted but missing")
        return
    if row["status"] not in TERMINAL:
        p.append(f"{tid}: not terminal ({row['status']})")
        return
    report.succeeded += row["status"] == "SUCCESS"
    report.failed += row["status"] == "FAILED"
    outcomes = [h["outcome"] for h in hist]
    report.lost_attempts += outcomes.count("LOST")
    if [h["attempt"] for h in hist] != list(range(1, row["attempt"] + 1)):
        p.append(f"{tid}: attempts {[h['attempt'] for h in hist]} for attempt={row['attempt']}")
    if outcomes.count("SUCCESS") > 1:
        p.append(f"{tid}: recorded SUCCESS {outcomes.count('SUCCESS')} times")
    if row["status"] == "SUCCESS" and outcomes[-1:] != ["SUCCESS"]:
        p.append(f"{tid}: SUCCESS but the last attempt was {outcomes[-1:]}")
    if row["status"] == "FAILED" and "SUCCESS" in outcomes:
        p.append(f"{tid}: both SUCCESS and FAILED")


def _check_executions(log: Path, rows: dict[str, asyncpg.Record], report: Report) -> None:
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines:
        event, tid, attempt, _pid, _ts = line.split()
        if event != "start":
            continue
        report.executions += 1
        row = rows.get(tid)
        if row is not None and int(attempt) > row["attempt"]:
            report.problems.append(
                f"{tid}: ran attempt {attempt} after it ended at {row['attempt']}"
            )
