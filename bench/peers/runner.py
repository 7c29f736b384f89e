"""Runs the peer benchmarks: one venv per peer, one subprocess per measurement (stdlib only).

For each peer: build (or reuse) ``.bench/venvs/<peer>`` with pinned requirements, run the
peer's processing workload once per variant under ``flock /tmp/taskd-bench.lock`` and keep the
fastest, then its submit workload; a peer that fails to install or run gets a row saying why.
``run_peers`` returns one dict per peer (see ``ROW_KEYS``); ``__main__`` prints them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peers import common

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BENCH_DIR = ROOT / ".bench"
VENVS = BENCH_DIR / "venvs"
LOGS = BENCH_DIR / "logs"
LOCK = "/tmp/taskd-bench.lock"
LOCK_WAIT_S = 1800  # another benchmark may hold the lock that long
PROCESSING_TIMEOUT_S = 240  # after the lock is taken; the worker itself times out at 120-150 s
SUBMIT_TIMEOUT_S = 180
INSTALL_TIMEOUT_S = 900
ROW_KEYS = (
    "name",
    "version",
    "processing_tps",
    "submit_tps",
    "bulk_submit_tps",
    "worker_cpu_per_1k",
    "redis_cpu_per_1k",
    "pg_cpu_per_1k",
    "config",
    "notes",
)
UVLOOP = "uvloop==0.23.0"
HIREDIS = "hiredis==3.5.0"


@dataclass(frozen=True)
class PeerSpec:
    name: str
    requirements: tuple[str, ...]

    @property
    def script(self) -> Path:
        return HERE / f"{self.name}_bench.py"

    @property
    def pinned_version(self) -> str:
        return self.requirements[0].split("==", 1)[1]


PEERS = (
    PeerSpec("arq", ("arq==0.28.0", "redis==5.3.1", HIREDIS, UVLOOP)),
    # saq 0.26.4 imports typing_extensions without declaring it; its redis extra wants redis<8.
    PeerSpec(
        "saq",
        (
            "saq[redis,hiredis]==0.26.4",
            "redis==7.4.1",
            HIREDIS,
            "typing_extensions==4.16.0",
            UVLOOP,
        ),
    ),
    PeerSpec(
        "celery",
        ("celery[redis]==5.7.0", "kombu==5.7.0", "redis==8.1.0", HIREDIS, "gevent==26.9.0"),
    ),
    PeerSpec("dramatiq", ("dramatiq[redis]==2.2.1", "redis==8.1.0", HIREDIS)),
    PeerSpec("taskiq", ("taskiq==0.13.0", "taskiq-redis==1.2.4", "redis==8.1.0", HIREDIS, UVLOOP)),
    PeerSpec(
        "procrastinate",
        ("procrastinate==3.10.0", "psycopg[binary,pool]==3.3.9", "psycopg-pool==3.3.3", UVLOOP),
    ),
)


class PeerFailure(Exception):
    """Ends one peer's run with a short reason for its row."""


def log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


# --- venvs -------------------------------------------------------------------------------


def ensure_venv(spec: PeerSpec) -> Path:
    """The peer's venv python; created (or re-created) only when its requirements changed."""
    venv = VENVS / spec.name
    marker = venv / "peers-requirements.txt"
    wanted = "\n".join(spec.requirements) + "\n"
    python = venv / "bin" / "python"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    log(f"{spec.name}: creating {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    base = os.environ.get("PEERS_PYTHON", "python3")
    _install_step([base, "-m", "venv", str(venv)], spec.name, "venv")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _install_step([*pip, *spec.requirements], spec.name, "pip install")
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=False
    )
    (venv / "freeze.txt").write_text(freeze.stdout)
    marker.write_text(wanted)
    return python


def _install_step(argv: list[str], name: str, what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise PeerFailure(f"{what} timed out after {INSTALL_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
        reason = (errors or done.stderr.strip().splitlines() or ["?"])[-1]
        log(f"{name}: {what} failed:\n{done.stderr[-2000:]}")
        raise PeerFailure(f"{what} failed: {reason[:200]}")


# --- one measurement ---------------------------------------------------------------------


def run_script(
    python: Path, spec: PeerSpec, args: list[str], timeout: float, tag: str
) -> dict[str, Any]:
    """Run the peer script under the benchmark lock; its one JSON line, or PeerFailure.

    ``timeout`` counts from the moment the script holds the lock. Whatever happens, the script's
    process group and every worker group it reported are killed before returning."""
    LOGS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        started, pgids = Path(tmp) / "started", Path(tmp) / "pgids"
        env = {
            **os.environ,
            "PEERS_STARTED_FILE": str(started),
            "PEERS_PGID_FILE": str(pgids),
            "PEERS_WORKER_LOG": str(LOGS / f"{tag}.worker.log"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PYTHONPATH", None)
        out_path, err_path = Path(tmp) / "out", LOGS / f"{tag}.stderr.log"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                ["flock", LOCK, str(python), str(spec.script), *args],
                cwd=HERE,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                _wait(proc, started, timeout)
            finally:
                _kill_all(proc, pgids)
        return _parse(out_path.read_text(errors="replace"), err_path)


def _wait(proc: subprocess.Popen[bytes], started: Path, timeout: float) -> None:
    lock_deadline = time.monotonic() + LOCK_WAIT_S
    deadline: float | None = None
    while proc.poll() is None:
        now = time.monotonic()
        if deadline is None and started.exists():
            deadline = now + timeout
        if deadline is None and now > lock_deadline:
            raise PeerFailure(f"{LOCK} still held by another benchmark after {LOCK_WAIT_S} s")
        if deadline is not None and now > deadline:
            raise PeerFailure(f"killed after {timeout:.0f} s (stuck)")
        time.sleep(0.1)


def _kill_all(proc: subprocess.Popen[bytes], pgids: Path) -> None:
    if proc.poll() is None:
        common.kill_group(proc.pid, proc)
    try:
        groups = {int(line) for line in pgids.read_text().split()}
    except OSError:
        groups = set()
    for pgid in groups:
        common.kill_group(pgid)
    if proc.returncode != 0:  # the script did not get to its own clean-up
        _quiet_flush()


def _quiet_flush() -> None:
    """FLUSHDB our Redis database under the benchmark lock: taskd's benchmarks use it too."""
    try:
        with open(LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the same lock as flock(1)
            common.flush_redis()
    except OSError as exc:
        log(f"could not flush Redis db {common.REDIS_DB}: {exc}")


def _parse(stdout: str, err_path: Path) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    tail = err_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise PeerFailure(f"no result ({tail[0][:200]}; see {err_path})")


# --- one peer ----------------------------------------------------------------------------


def empty_row(spec: PeerSpec) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(name=spec.name, version=spec.pinned_version, notes=[])
    return row


def run_peer(spec: PeerSpec, tasks: int) -> dict[str, Any]:
    row = empty_row(spec)
    try:
        python = ensure_venv(spec)
        _processing(python, spec, tasks, row)
        _submit(python, spec, tasks, row)
    except PeerFailure as exc:
        row["notes"].append(str(exc))
    return row


def list_variants(python: Path, spec: PeerSpec) -> list[str]:
    done = subprocess.run(
        [str(python), str(spec.script), "--list-variants"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise PeerFailure(f"cannot import the peer script: {tail[:200]}")
    variants: list[str] = json.loads(done.stdout)
    return variants


def _processing(python: Path, spec: PeerSpec, tasks: int, row: dict[str, Any]) -> None:
    results = []
    for variant in list_variants(python, spec):
        log(f"{spec.name}: processing, {tasks} tasks, variant {variant}")
        args = ["--tasks", str(tasks), "--mode", "processing", "--variant", variant]
        tag = f"{spec.name}-processing-{variant}"
        try:
            result = run_script(python, spec, args, PROCESSING_TIMEOUT_S, tag)
        except PeerFailure as exc:
            result = {"variant": variant, "error": str(exc)}
        row["version"] = result.get("version", row["version"])
        results.append(result)
    ok = [r for r in results if r.get("processing_tps") and not r.get("error")]
    if ok:
        best = max(ok, key=lambda r: r["processing_tps"])
        for key in ("processing_tps", "worker_cpu_per_1k", "redis_cpu_per_1k", "pg_cpu_per_1k"):
            row[key] = best[key]
        row["config"] = best["config"]
        row["variant"] = best["variant"]
        row["processing_detail"] = best
        row["notes"].extend(best.get("notes", []))
    row["variants"] = {r["variant"]: r.get("processing_tps") or r.get("error") for r in results}
    if len(results) > 1 and ok:
        others = ", ".join(f"{k}: {_short(v)}" for k, v in row["variants"].items())
        row["notes"].append(f"processing variants (tasks/s): {others}; kept {row['variant']}")
    for failed in (r for r in results if r.get("error")):
        row["notes"].append(f"processing {failed['variant']}: {failed['error']}")


def _short(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, float | int) else "failed"


def _submit(python: Path, spec: PeerSpec, tasks: int, row: dict[str, Any]) -> None:
    log(f"{spec.name}: submit, {tasks} tasks")
    args = ["--tasks", str(tasks), "--mode", "submit"]
    try:
        result = run_script(python, spec, args, SUBMIT_TIMEOUT_S, f"{spec.name}-submit")
    except PeerFailure as exc:
        row["notes"].append(f"submit: {exc}")
        return
    if result.get("error"):
        row["notes"].append(f"submit: {result['error']}")
        return
    row["submit_tps"] = result["submit_tps"]
    row["bulk_submit_tps"] = result["bulk_submit_tps"]
    row["notes"].extend(result.get("notes", []))


def run_peers(tasks: int = 20_000, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Benchmark the peers (all, or those named in ``only``); one dict per peer: ``ROW_KEYS``,
    plus ``variant`` (the processing variant kept), ``variants`` (tasks/s or error for each
    variant tried) and ``processing_detail`` (the kept run's JSON: done_at_t0, elapsed_s,
    startup_s...). Figures a peer could not produce are None and its notes say why."""
    names = [spec.name for spec in PEERS]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"unknown peers {unknown}; known: {names}")
    return [run_peer(spec, tasks) for spec in PEERS if not only or spec.name in only]
