"""``python -m bench.peers [--tasks N] [--only arq,saq] [--json]``: benchmark the peer task
queues and print a table (or, with --json, one JSON object per peer). Exit status 0 even when
a peer fails: its row says why."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench.peers.runner import PEERS, ROW_KEYS, run_peers

COLUMNS = (
    ("peer", "name", "{}"),
    ("version", "version", "{}"),
    ("processing/s", "processing_tps", "{:,.0f}"),
    ("submit/s", "submit_tps", "{:,.0f}"),
    ("bulk submit/s", "bulk_submit_tps", "{:,.0f}"),
    ("worker CPU s/1k", "worker_cpu_per_1k", "{:.3f}"),
    ("Redis CPU s/1k", "redis_cpu_per_1k", "{:.3f}"),
    ("PG CPU s/1k", "pg_cpu_per_1k", "{:.3f}"),
)


def cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "failed" if key == "processing_tps" else "n/a"
    return fmt.format(value)


def short_note(row: dict[str, Any]) -> str:
    if row.get("processing_tps") is None:
        notes: list[str] = row["notes"] or ["failed"]
        return notes[-1][:70]
    return str(row.get("variant", ""))


def print_table(rows: list[dict[str, Any]], tasks: int) -> None:
    header = [title for title, _, _ in COLUMNS] + ["notes"]
    lines = [[cell(row, key, fmt) for _, key, fmt in COLUMNS] + [short_note(row)] for row in rows]
    widths = [max(len(x) for x in column) for column in zip(header, *lines, strict=False)]
    print(f"\npeer task queues: {tasks:,} no-op tasks; processing = 1 worker process")
    for i, line in enumerate([header, *lines]):
        cells = [
            c.ljust(w) if j in (0, 1, len(line) - 1) else c.rjust(w)
            for j, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nconfiguration and notes:")
    for row in rows:
        print(f"- {row['name']} {row['version']}: {row['config'] or 'not measured'}")
        for note in row["notes"]:
            print(f"    {note}")


def _align(line: list[str], widths: list[int]) -> list[str]:
    """Text columns (peer, version, notes) to the left, figures to the right."""
    left = {0, 1, len(line) - 1}
    return [
        c.ljust(w) if j in left else c.rjust(w)
        for j, (c, w) in enumerate(zip(line, widths, strict=True))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000, help="N (default 20,000)")
    names = ",".join(spec.name for spec in PEERS)
    parser.add_argument("--only", help=f"comma-separated subset of {names}")
    parser.add_argument("--json", action="store_true", help="one JSON object per peer")
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",")] if args.only else None
    try:
        rows = run_peers(args.tasks, only)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        for row in rows:
            print(json.dumps({key: row.get(key) for key in ROW_KEYS}), flush=True)
    else:
        print_table(rows, args.tasks)


if __name__ == "__main__":
    main()
