"""Shared, stdlib-only helpers for the peer scripts (each runs in its own venv).

A peer script (``<peer>_bench.py``) describes how to enqueue, how many tasks are left according
to the library's own state, how to start its worker, and how to submit; ``main`` below turns that
into the two measured modes and prints ONE JSON line:

* ``processing``: enqueue N, start one worker process, poll the remaining count every ~5 ms;
  ``t0`` is the first poll with at least one task done, ``t_end`` the first poll with none left
  (confirmed by a second poll). tasks/s = ``(N - done_at_t0) / (t_end - t0)``. CPU seconds of the
  worker process tree, redis-server and postgres are read from /proc at ``t0`` and ``t_end``, and
  divided by the tasks done in that window.
* ``submit``: N enqueue calls from 64 concurrent coroutines (threads for sync clients), then N
  tasks in bulk calls of 1,000 where the library has a bulk enqueue.

This file also holds a minimal RESP client (``Resp``) used to flush Redis database 9 and to read
queue depths without going through any library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REDIS_HOST = os.environ.get("PEERS_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("PEERS_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("PEERS_REDIS_DB", "9"))
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
PG_ADMIN_URL = os.environ.get("PEERS_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SUBMIT_CONCURRENCY = 64
BULK_SIZE = 1000
POLL_S = 0.005


# --- Redis (RESP2) without a client library ------------------------------------------------


class RespError(Exception):
    """An error reply from Redis."""


class Resp:
    """A blocking RESP2 connection to the bench's Redis database; enough for polling."""

    def __init__(self, db: int = REDIS_DB) -> None:
        self.sock = socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=10)
        self.reader = self.sock.makefile("rb")
        self.call("SELECT", str(db))

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def call(self, *args: str) -> Any:
        return self.pipeline([args])[0]

    def pipeline(self, commands: list[tuple[str, ...]]) -> list[Any]:
        self.sock.sendall(b"".join(_encode(c) for c in commands))
        return [self._read() for _ in commands]

    def _read(self) -> Any:
        line = self.reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.reader.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RespError(f"unexpected reply {line!r}")


def _encode(args: tuple[str, ...]) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def flush_redis() -> None:
    """FLUSHDB the bench's Redis database (9 unless PEERS_REDIS_DB says otherwise)."""
    conn = Resp()
    try:
        conn.call("FLUSHDB")
    finally:
        conn.close()


# --- CPU from /proc ----------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> tuple[str, list[str]] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()


def _all_stats() -> dict[int, tuple[str, list[str]]]:
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat_fields(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    return stats


def redis_cpu() -> float:
    """CPU seconds of every redis-server process (and its reaped BGSAVE children)."""
    return sum(_with_children(f) for comm, f in _all_stats().values() if comm == "redis-server")


def postgres_cpu(own_db: str | None) -> float:
    """CPU seconds of the live postgres processes, leaving out backends (and autovacuum workers)
    of databases other than ``own_db``: other people's tests share this server. Reaped backends
    are not counted (their CPU lands in the postmaster's cutime, mixed with everybody's); the
    bench's own backends live through the measured window."""
    total = 0.0
    for pid, (comm, fields) in _all_stats().items():
        if comm == "postgres" and _pg_database(pid) in (None, own_db):
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def _pg_database(pid: int) -> str | None:
    """The database a postgres backend serves, from its process title; None for the shared
    processes (postmaster, checkpointer, WAL writer, ...)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    tokens = title.replace("\0", " ").split()
    if not tokens or tokens[0] != "postgres:":
        return None
    tokens = tokens[1:]
    if tokens and tokens[0].endswith(":"):  # Debian's "15/main:" cluster prefix
        tokens = tokens[1:]
    if tokens[:2] == ["autovacuum", "worker"]:
        return tokens[2] if len(tokens) > 2 else None
    if len(tokens) >= 3 and ("(" in tokens[2] or tokens[2] == "[local]"):
        return tokens[1]
    return None


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and all its live descendants, plus their reaped children."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, (_, fields) in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += _with_children(stats[pid][1])
        todo.extend(children.get(pid, []))
    return total


def _with_children(fields: list[str]) -> float:
    # Fields after the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


@dataclass
class CpuSample:
    worker: float
    redis: float
    postgres: float

    @classmethod
    def take(cls, worker_pid: int, pg_db: str | None) -> CpuSample:
        return cls(tree_cpu(worker_pid), redis_cpu(), postgres_cpu(pg_db))


# --- Worker processes --------------------------------------------------------------------


class Worker:
    """A worker started in its own process group, output to PEERS_WORKER_LOG; its pgid is
    appended to PEERS_PGID_FILE so the orchestrator can kill it even if this script dies."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        default_log = f"/tmp/peers-worker-{os.getpid()}.log"
        self.log = Path(os.environ.get("PEERS_WORKER_LOG", default_log))
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=HERE,
                env={**os.environ, "PYTHONPATH": str(HERE), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if pgid_file := os.environ.get("PEERS_PGID_FILE"):
            with open(pgid_file, "a") as f:
                f.write(f"{self.proc.pid}\n")

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 3) -> str:
        return " | ".join(self.text().strip().splitlines()[-lines:])[-400:]

    def stop(self) -> None:
        kill_group(self.proc.pid, self.proc)


def kill_group(pgid: int, proc: subprocess.Popen[bytes] | None = None, grace: float = 3) -> None:
    """SIGTERM the process group, then SIGKILL it if anything is left after ``grace`` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap the leader, or the group never looks empty
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


# --- Measurements ------------------------------------------------------------------------


class BenchError(Exception):
    """A failure worth one short line in the table."""


@dataclass
class Processing:
    tasks: int
    done_at_t0: int
    startup_s: float
    elapsed_s: float
    cpu0: CpuSample
    cpu1: CpuSample
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        window = self.tasks - self.done_at_t0
        per_k = 1000 / window if window else 0.0
        return {
            "processing_tps": round(window / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
            "worker_cpu_per_1k": round((self.cpu1.worker - self.cpu0.worker) * per_k, 4),
            "redis_cpu_per_1k": round((self.cpu1.redis - self.cpu0.redis) * per_k, 4),
            "pg_cpu_per_1k": round((self.cpu1.postgres - self.cpu0.postgres) * per_k, 4),
            "done_at_t0": self.done_at_t0,
            "startup_s": round(self.startup_s, 2),
            "elapsed_s": round(self.elapsed_s, 3),
        }


def run_worker(
    argv: list[str],
    n: int,
    remaining: Callable[[], int],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    slow_poll: float = POLL_S,
    pg_db: str | None = None,
) -> Processing:
    """Start the worker on the N queued tasks, measure until they are done, stop it.

    ``remaining()`` reads how many tasks are queued or in progress from the library's state;
    after the first task is done it is polled every ``slow_poll`` s (default 5 ms); ``pg_db``
    names the scratch database whose backends count as the bench's Postgres CPU."""
    worker = Worker(argv, env)
    try:
        result = measure_processing(n, remaining, worker, timeout, slow_poll, pg_db)
    finally:
        worker.stop()
    if tracebacks := worker.text().count("Traceback"):
        result.notes.append(f"worker log has {tracebacks} tracebacks ({worker.log})")
    return result


def measure_processing(
    n: int,
    remaining: Callable[[], int],
    worker: Worker,
    timeout: float,
    slow_poll: float = POLL_S,
    pg_db: str | None = None,
) -> Processing:
    """Poll ``remaining()`` while the (just started) worker drains the N queued tasks."""
    spawned = time.monotonic()
    deadline = spawned + timeout
    while (left := remaining()) >= n:
        _check_alive(worker, deadline, n - left, n)
        time.sleep(POLL_S)
    t0 = time.monotonic()
    cpu0 = CpuSample.take(worker.proc.pid, pg_db)
    done_at_t0 = n - left
    t_end = _wait_drained(remaining, worker, deadline, n, slow_poll)
    cpu1 = CpuSample.take(worker.proc.pid, pg_db)
    return Processing(n, done_at_t0, t0 - spawned, t_end - t0, cpu0, cpu1)


def _wait_drained(
    remaining: Callable[[], int], worker: Worker, deadline: float, n: int, poll: float
) -> float:
    first_zero: float | None = None
    while True:
        left = remaining()
        now = time.monotonic()
        if left == 0:
            if first_zero is not None:
                return first_zero
            first_zero = now
            time.sleep(POLL_S)
            continue
        first_zero = None
        _check_alive(worker, deadline, n - left, n)
        time.sleep(poll)


def _check_alive(worker: Worker, deadline: float, done: int, n: int) -> None:
    if worker.proc.poll() is not None:
        raise BenchError(f"worker exited ({worker.proc.returncode}) at {done}/{n}: {worker.tail()}")
    if time.monotonic() > deadline:
        raise BenchError(f"timed out with {done}/{n} done; worker log: {worker.tail(2)}")


async def submit_concurrently(
    n: int, call: Callable[[], Awaitable[Any]], concurrency: int = SUBMIT_CONCURRENCY
) -> float:
    """Seconds to make ``n`` awaited calls from ``concurrency`` coroutines."""
    todo = iter(range(n))

    async def loop() -> None:
        for _ in todo:
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return time.perf_counter() - started


def submit_threaded(
    n: int, call: Callable[[], Any], concurrency: int = SUBMIT_CONCURRENCY
) -> float:
    """Seconds to make ``n`` calls from ``concurrency`` threads (for sync-only clients)."""
    todo: Iterator[int] = iter(range(n))
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            for _ in todo:
                call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def batches(n: int, size: int = BULK_SIZE) -> Iterator[int]:
    """Sizes of the bulk calls that make up ``n`` tasks."""
    for start in range(0, n, size):
        yield min(size, n - start)


def expect_remaining(remaining: Callable[[], int], n: int, what: str) -> None:
    """Check the library's own count after an enqueue phase."""
    if (left := remaining()) != n:
        raise BenchError(f"{what}: expected {n} tasks queued, the library reports {left}")


# --- The peer-script protocol ------------------------------------------------------------


@dataclass
class SubmitResult:
    single_s: float
    bulk_s: float | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Peer:
    """What a peer script supplies. ``processing`` and ``submit`` do the whole mode."""

    name: str
    version: str
    processing: Callable[[int, str], tuple[Processing, str]]
    submit: Callable[[int], SubmitResult]
    variants: list[str] = field(default_factory=lambda: ["default"])


def main(peer: Peer) -> None:
    """CLI of a peer script: ``--tasks N --mode processing|submit [--variant V]``, or
    ``--list-variants`` (a JSON list of the processing variants, first the usual best)."""
    if sys.argv[1:] == ["--list-variants"]:
        print(json.dumps(peer.variants))
        return
    parser = argparse.ArgumentParser(description=f"{peer.name} benchmark")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--mode", choices=["processing", "submit"], required=True)
    parser.add_argument("--variant", default=peer.variants[0], choices=peer.variants)
    args = parser.parse_args()
    _install_term_handler()
    if started := os.environ.get("PEERS_STARTED_FILE"):  # the orchestrator's timeout starts now
        Path(started).touch()
    out: dict[str, Any] = {"name": peer.name, "version": peer.version, "mode": args.mode}
    try:
        flush_redis()
        out.update(_run_mode(peer, args.tasks, args.mode, args.variant))
    except BenchError as exc:
        out["error"] = str(exc)
    except Exception as exc:
        traceback.print_exc()
        out["error"] = f"{type(exc).__name__}: {exc}"[:400]
    finally:
        _quiet(flush_redis)
    print(json.dumps(out), flush=True)


def _run_mode(peer: Peer, n: int, mode: str, variant: str) -> dict[str, Any]:
    if mode == "processing":
        result, config = peer.processing(n, variant)
        return {**result.as_dict(), "variant": variant, "config": config, "notes": result.notes}
    sub = peer.submit(n)
    return {
        "submit_tps": round(n / sub.single_s, 1),
        "bulk_submit_tps": round(n / sub.bulk_s, 1) if sub.bulk_s else None,
        "notes": sub.notes,
    }


def _install_term_handler() -> None:
    # Turn SIGTERM into SystemExit so `finally` blocks stop the workers we started.
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _quiet(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as exc:
        print(f"cleanup failed: {exc}", file=sys.stderr)
