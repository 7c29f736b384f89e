"""A randomized soak: thousands of tasks through real taskd processes while faults rain down.

    make chaos                      # 3 minutes
    python -m tests.fault.chaos --minutes 10 --seed 42

Runs an api, two workers and two promoters against local Postgres and a private Redis, both
behind fault proxies, submits tasks through the REST API, and every few seconds injects one
fault: kill -9 or SIGTERM of a worker, Redis FLUSHALL or restart, a Postgres or Redis outage,
a Redis partition, a slow Postgres, Postgres connections terminated. After each fault it heals,
then times how long a probe task takes to succeed (the recovery). At the end it checks every
accepted task with tests/fault/checker.py and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg

from taskd.api.auth import mint_token
from taskd.store.migrate import migrate
from tests.conftest import ADMIN_URL
from tests.fault.checker import check_run
from tests.fault.harness import RedisServer, Taskd, role_env
from tests.fault.proxy import FaultProxy

SECRET = "fault-secret-" + "y" * 32


class Chaos:
    def __init__(self, rng: random.Random, db_url: str, workdir: Path) -> None:
        self.rng = rng
        self.db_url = db_url
        self.redis = RedisServer()
        self.redis.start()
        self.pg_proxy = FaultProxy("127.0.0.1", 5432)
        self.redis_proxy = FaultProxy("127.0.0.1", self.redis.port)
        self.pg_proxy.start()
        self.redis_proxy.start()
        self.queue = f"chaos-{secrets.token_hex(3)}"
        self.exec_log = workdir / "executions.log"
        proxied_db = db_url.replace("127.0.0.1:5432", f"127.0.0.1:{self.pg_proxy.port}")
        self.env = role_env(
            proxied_db,
            f"redis://127.0.0.1:{self.redis_proxy.port}/0",
            self.queue,
            self.exec_log,
            WORKER__CONCURRENCY="20",
            REDIS__SOCKET_TIMEOUT="1",
            REDIS__CONNECT_TIMEOUT="1",
            DATABASE__CONNECT_TIMEOUT="2",
            DATABASE__STATEMENT_TIMEOUT="5",
            DATABASE__APPLICATION_NAME="taskd-chaos",
        )
        self.api = Taskd(["api"], {**self.env, "TASKD_API__PORT": "0"}, "chaos-api")
        self.workers: list[Taskd] = []
        self.others: list[Taskd] = []
        self.faults: Counter[str] = Counter()
        self.recoveries: list[float] = []

    def start(self) -> None:
        port = _free_port()
        self.api.env["TASKD_API__PORT"] = str(port)
        self.api.port = port  # the api role serves /healthz on its API port
        self.api.start()
        self.others = [
            Taskd(["promoter"], self.env, f"chaos-promoter{i}").start() for i in range(2)
        ]
        self.workers = [Taskd(["worker"], self.env, f"chaos-worker{i}").start() for i in range(2)]

    def stop(self) -> None:
        for p in [self.api, *self.workers, *self.others]:
            p.stop()
        self.pg_proxy.stop()
        self.redis_proxy.stop()
        self.redis.stop()

    def fault_menu(self) -> dict[str, Callable[[], Callable[[], None]]]:
        """Each entry injects a fault and returns how to heal it."""
        return {
            "kill -9 worker": self._kill_worker(signal.SIGKILL),
            "SIGTERM worker": self._kill_worker(signal.SIGTERM),
            "Redis FLUSHALL": lambda: (self.redis.command("FLUSHALL"), _noop)[1],
            "Redis restart": self._restart_redis,
            "Postgres outage": lambda: self._outage(self.pg_proxy),
            "Redis outage": lambda: self._outage(self.redis_proxy),
            "Redis partition": lambda: (self.redis_proxy.blackhole(), self.redis_proxy.heal)[1],
            "slow Postgres": lambda: (self.pg_proxy.set_latency(0.05), self.pg_proxy.heal)[1],
            "Postgres connections killed": self._terminate_backends,
        }

    def _terminate_backends(self) -> Callable[[], None]:
        sql = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'taskd-chaos'"
        )
        subprocess.run(["psql", ADMIN_URL, "-qAtc", sql], check=True, capture_output=True)
        return _noop

    def _kill_worker(self, sig: int) -> Callable[[], Callable[[], None]]:
        def inject() -> Callable[[], None]:
            i = self.rng.randrange(len(self.workers))
            victim = self.workers[i]
            victim.signal(sig)
            victim.wait(40)

            def heal() -> None:
                self.workers[i] = Taskd(["worker"], self.env, f"chaos-worker{i}").start()

            return heal

        return inject

    def _restart_redis(self) -> Callable[[], None]:
        self.redis.stop()
        self.redis.start()
        return _noop

    def _outage(self, proxy: FaultProxy) -> Callable[[], None]:
        proxy.refuse()
        proxy.reset_all()
        return proxy.heal


def _noop() -> None:
    return None


def _free_port() -> int:
    from tests.fault.harness import free_port

    return free_port()


class Submitter:
    def __init__(self, base: str, queue: str, rng: random.Random) -> None:
        self.base = base
        self.queue = queue
        self.rng = rng
        self.accepted: list[str] = []
        self.answers: Counter[int] = Counter()
        self.headers = {"Authorization": "Bearer " + mint_token(SECRET, "chaos", ttl_seconds=86400)}

    async def submit(self, http: aiohttp.ClientSession, seconds: float | None = None) -> str | None:
        body = {
            "type": "fault.work",
            "queue": self.queue,
            "max_retries": 8,
            "payload": {"seconds": self.rng.uniform(0, 0.3) if seconds is None else seconds},
        }
        try:
            async with http.post(
                f"{self.base}/v1/tasks",
                json=body,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as r:
                self.answers[r.status] += 1
                if r.status == 201:
                    tid = str((await r.json())["id"])
                    self.accepted.append(tid)
                    return tid
        except (aiohttp.ClientError, TimeoutError):
            self.answers[0] += 1
        return None

    async def run(self, http: aiohttp.ClientSession, until: float, rate: float) -> None:
        while time.monotonic() < until:
            await asyncio.gather(*(self.submit(http) for _ in range(int(rate // 10) or 1)))
            await asyncio.sleep(0.1)


async def wait_success(pool: asyncpg.Pool, tid: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pool.fetchval("SELECT status FROM tasks WHERE id = $1", tid) == "SUCCESS":
            return True
        await asyncio.sleep(0.05)
    return False


async def soak(minutes: float, seed: int, rate: float) -> int:
    rng = random.Random(seed)
    name = f"taskd_chaos_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(db_url)
    await migrate(conn)
    await conn.close()
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    chaos = Chaos(rng, db_url, Path(tempfile.mkdtemp(prefix="taskd-chaos-")))
    try:
        chaos.start()
        sub = Submitter(f"http://127.0.0.1:{chaos.api.port}", chaos.queue, rng)
        async with aiohttp.ClientSession() as http:
            until = time.monotonic() + minutes * 60
            feeder = asyncio.create_task(sub.run(http, until, rate))
            menu = chaos.fault_menu()
            while time.monotonic() < until - 5:
                await asyncio.sleep(rng.uniform(3, 8))
                fault = rng.choice(sorted(menu))
                heal = await asyncio.to_thread(menu[fault])
                chaos.faults[fault] += 1
                await asyncio.sleep(rng.uniform(1, 4))  # the fault lasts a while
                await asyncio.to_thread(heal)
                healed = time.monotonic()
                probe = None
                while probe is None and time.monotonic() - healed < 60:
                    probe = await sub.submit(http, seconds=0)
                recovered = probe is not None and await wait_success(pool, probe, 120)
                chaos.recoveries.append(time.monotonic() - healed if recovered else float("inf"))
            await feeder
        drained = await _drain(pool, timeout=180)
        report = await check_run(pool, sub.accepted, chaos.exec_log)
        stale = sum(p.log().count("dropped the outcome") for p in [*chaos.workers])
        _print(chaos, sub, report, stale, drained)
        return 0 if not report.problems and drained else 1
    finally:
        chaos.stop()
        await pool.close()
        with contextlib.suppress(Exception):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _drain(pool: asyncpg.Pool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = await pool.fetchval(
            "SELECT count(*) FROM tasks WHERE status IN ('PENDING', 'RUNNING')"
        )
        if left == 0:
            return True
        await asyncio.sleep(0.2)
    return False


def _print(chaos: Chaos, sub: Submitter, report: object, stale: int, drained: bool) -> None:
    r = report  # a checker.Report
    rows = [
        ("submitted (201)", len(sub.accepted)),
        ("refused (503)", sub.answers[503]),
        ("unanswered (connection error)", sub.answers[0]),
        ("succeeded", r.succeeded),  # type: ignore[attr-defined]
        ("failed", r.failed),  # type: ignore[attr-defined]
        ("lost attempts (recorded as LOST)", r.lost_attempts),  # type: ignore[attr-defined]
        ("invariant violations", len(r.problems)),  # type: ignore[attr-defined]
        ("stale writes rejected (logged)", stale),
        ("longest recovery (s)", f"{max(chaos.recoveries, default=0):.1f}"),
        ("all accepted tasks terminal", "yes" if drained else "NO"),
    ]
    print("\nfaults injected: " + ", ".join(f"{k} ×{v}" for k, v in sorted(chaos.faults.items())))
    for label, value in rows:
        print(f"  {label:<36} {value}")
    for problem in r.problems[:20]:  # type: ignore[attr-defined]
        print("  !", problem)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--rate", type=float, default=50.0, help="submissions per second")
    a = p.parse_args()
    print(f"chaos soak: {a.minutes} min, seed {a.seed}, ~{a.rate:g} tasks/s")
    raise SystemExit(asyncio.run(soak(a.minutes, a.seed, a.rate)))


if __name__ == "__main__":
    main()
