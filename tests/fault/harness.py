"""Run taskd roles and a private Redis as real processes, and break them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout}s")


class RedisServer:
    """A private redis-server on a free port: tests may flush, kill and restart it freely."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="taskd-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, 10, "redis-server start")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Taskd:
    """One ``taskd --role ...`` process with its own ops port and log file."""

    def __init__(self, roles: list[str], env: dict[str, str], name: str) -> None:
        self.roles = roles
        self.port = free_port()
        self.env = {
            **os.environ,
            **env,
            "TASKD_OPS__PORT": str(self.port),
            "PYTHONPATH": str(ROOT),
            "TASKD_LOG__JSON": "false",
        }
        self.log_path = Path(tempfile.mkstemp(prefix=f"taskd-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Taskd:
        args = [sys.executable, "-m", "taskd"]
        for role in self.roles:
            args += ["--role", role]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, cwd=ROOT, stdout=log, stderr=log)
        wait_until(self.healthy, 20, f"taskd {self.roles} start (log: {self.log_path})")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"taskd exited with {self.proc.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextmanager
def processes() -> Iterator[list[Taskd]]:
    """Collects processes started inside the block and stops them all at the end."""
    started: list[Taskd] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


def role_env(
    database_url: str, redis_url: str, queue: str, exec_log: Path, **settings: str
) -> dict[str, str]:
    env = {
        "TASKD_DATABASE__URL": database_url,
        "TASKD_REDIS__URL": redis_url,
        "TASKD_WORKER__QUEUES": f"[{queue}]",
        "TASKD_WORKER__HANDLERS": "[tests.fault.handlers]",
        "TASKD_WORKER__LEASE_SECONDS": "2",
        "TASKD_WORKER__SHUTDOWN_GRACE_SECONDS": "10",
        "TASKD_PROMOTER__INTERVAL_SECONDS": "0.2",
        "TASKD_PROMOTER__RECONCILE_GRACE_SECONDS": "1",
        "TASKD_RETRY__BACKOFF__BASE": "0.05",
        "TASKD_RETRY__BACKOFF__MAX": "0.5",
        "TASKD_AUTH__JWT_SECRET": "fault-secret-" + "y" * 32,
        "TASKD_TEST_EXEC_LOG": str(exec_log),
    }
    env.update({f"TASKD_{k.upper()}": v for k, v in settings.items()})
    return env
