"""Submit throughput: one ``taskd --role api`` process driven by wrk.

    python -m bench.submit [--requests 20000] [--connections 64] [--batch-requests 40]

Measures (a) single-task ``POST /v1/tasks`` from ``--connections`` concurrent connections,
``--requests`` requests: requests/s and wrk's client-side p50/p99; (b) ``POST /v1/tasks/batch``
with 1,000 tasks per request from 1 and from 4 concurrent clients: tasks/s. For each phase it
prints the CPU seconds per 1,000 requests of the api process, Postgres, Redis and wrk itself
(from /proc and getrusage, so they include whatever else those processes did meanwhile).

The load generator is wrk (Debian: ``apt-get install -y wrk``) with a Lua script: one wrk
thread costs a fraction of the api process's CPU, so on 2 cores the api process, not the client,
is what is measured. Uses the local Postgres (TASKD_TEST_DATABASE__URL) in a scratch database
and Redis db 9 (TASKD_BENCH_REDIS_URL) under a random queue name; both are removed at the end.
``measure()`` returns the figures as a dict for an orchestrator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench.common import (
    REDIS_URL,
    ROOT,
    box_cpu,
    cpu_seconds,
    free_port,
    other_cores,
    proc_cpu,
    scratch_database,
)
from taskd.api.auth import mint_token

WRK_MISSING = (
    "bench.submit needs wrk, the HTTP load generator: apt-get install -y wrk "
    "(Debian/Ubuntu; https://github.com/wg/wrk elsewhere)"
)

# wrk's Lua side: POST one body, stop after `limit` responses (SIGINT ends wrk's timed run at
# once instead of at -d), then print the figures as one JSON line for the Python side.
WRK_LUA = """
local ffi = require("ffi")
ffi.cdef[[ int kill(int pid, int sig); int getpid(void); ]]
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local limit, count = %(limit)d, 0
function response(status, headers, body)
  count = count + 1
  if count == limit then
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), 2)
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"max_us": %%d, "non_2xx": %%d, "socket_errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class Api:
    """A running api process and how to talk to it."""

    proc: subprocess.Popen[bytes]
    base: str
    token: str
    queue: str


async def drop_queue_keys(queue: str) -> None:
    """Remove the scratch queue's Redis keys (ids of every submitted task)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"taskd:{{{queue}}}:*", count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


def role_env(db_url: str, queue: str, secret: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKD_")}
    env.update(
        {
            "TASKD_DATABASE__URL": db_url,
            "TASKD_REDIS__URL": REDIS_URL,
            "TASKD_AUTH__JWT_SECRET": secret,
            "TASKD_API__PORT": str(port),
            "TASKD_WORKER__QUEUES": f"[{queue}]",
            "TASKD_OPS__PORT": "0",
            "TASKD_LOG__LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


@contextlib.contextmanager
def role_process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m taskd ARGS``, stopped with SIGTERM (then SIGKILL) when the block ends."""
    proc = subprocess.Popen([sys.executable, "-m", "taskd", *args], env=env, cwd=ROOT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(base: str, proc: subprocess.Popen[bytes], within: float = 30.0) -> None:
    """Poll ``base``/readyz until it answers 200 (the process's Postgres and Redis answer)."""
    async with asyncio.timeout(within), aiohttp.ClientSession() as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the process exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_api(db_url: str, queue: str) -> AsyncIterator[Api]:
    secret = secrets.token_hex(32)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with role_process(["--role", "api"], role_env(db_url, queue, secret, port)) as proc:
        await wait_ready(base, proc)
        # What `taskd token` mints: HS256 with auth.jwt_secret, scopes tasks:read tasks:write.
        yield Api(proc, base, mint_token(secret, "bench", ttl_seconds=3600), queue)


def run_wrk(api: Api, path: str, body: bytes, requests: int, connections: int) -> dict[str, Any]:
    """``requests`` POSTs of ``body`` over ``connections`` connections (one wrk thread)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit(WRK_MISSING)
    script = WRK_LUA % {"body": body.decode(), "token": api.token, "limit": requests}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(script)
        f.flush()
        cmd = [wrk, "-t1", f"-c{connections}", "-d600s", "--timeout", "30s", "-s", f.name]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [*cmd, api.base + path], capture_output=True, text=True, check=True
        ).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    figures: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
    figures["wrk_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return figures


def phase(api: Api, path: str, body: bytes, requests: int, connections: int) -> dict[str, Any]:
    """One wrk run with the CPU every process spent meanwhile."""
    api0, pg0, redis0 = proc_cpu(api.proc.pid), cpu_seconds("postgres"), cpu_seconds("redis-server")
    box0 = box_cpu()
    w = run_wrk(api, path, body, requests, connections)
    box1 = box_cpu()
    api1, pg1, redis1 = proc_cpu(api.proc.pid), cpu_seconds("postgres"), cpu_seconds("redis-server")
    ours = (api1 - api0) + (pg1 - pg0) + (redis1 - redis0) + w["wrk_cpu"]
    n, seconds = w["requests"], w["duration_us"] / 1e6
    per_k = 1000 / max(n, 1)
    return {
        "connections": connections,
        "requests": n,
        "seconds": seconds,
        "requests_per_s": n / seconds,
        "p50_ms": w["p50_us"] / 1000,
        "p99_ms": w["p99_us"] / 1000,
        "max_ms": w["max_us"] / 1000,
        "errors": w["non_2xx"] + w["socket_errors"],
        "api_cpu_s_per_1k_requests": (api1 - api0) * per_k,
        "postgres_cpu_s_per_1k_requests": (pg1 - pg0) * per_k,
        "redis_cpu_s_per_1k_requests": (redis1 - redis0) * per_k,
        "wrk_cpu_s_per_1k_requests": w["wrk_cpu"] * per_k,
        "other_cores": other_cores(box0, box1, ours),
    }


def bodies(queue: str, batch_size: int) -> tuple[bytes, bytes]:
    one = {"type": "bench.noop", "queue": queue}
    return json.dumps(one).encode(), json.dumps({"tasks": [one] * batch_size}).encode()


async def measure_async(
    requests: int = 20_000, connections: int = 64, batch_requests: int = 40, batch_size: int = 1000
) -> dict[str, Any]:
    """Run every phase against a fresh api process; returns ``{phase: figures}``."""
    queue = f"bench-{secrets.token_hex(4)}"
    single, batch = bodies(queue, batch_size)
    out: dict[str, Any] = {}
    async with scratch_database() as db_url, running_api(db_url, queue) as api:
        try:
            # Warm-up: connections, prepared statements, caches; not measured.
            await asyncio.to_thread(phase, api, "/v1/tasks", single, 2000, connections)
            await asyncio.to_thread(phase, api, "/v1/tasks/batch", batch, 3, 1)
            out["single"] = await asyncio.to_thread(
                phase, api, "/v1/tasks", single, requests, connections
            )
            for clients in (1, 4):
                f = await asyncio.to_thread(
                    phase, api, "/v1/tasks/batch", batch, batch_requests, clients
                )
                f["tasks_per_s"] = f["requests_per_s"] * batch_size
                out[f"batch_{clients}"] = f
        finally:
            await drop_queue_keys(queue)
    out["single"]["tasks_per_s"] = out["single"]["requests_per_s"]
    return out


def measure(**kwargs: Any) -> dict[str, Any]:
    """Synchronous :func:`measure_async` for callers without an event loop."""
    return asyncio.run(measure_async(**kwargs))


def print_table(figures: dict[str, Any], batch_size: int = 1000) -> None:
    print("\nsubmit: one api process; wrk, 1 thread; CPU s per 1,000 requests")
    head = (
        f"{'phase':<26} {'conns':>5} {'requests':>8} {'req/s':>8} {'tasks/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'api CPU':>8} {'PG CPU':>7} "
        f"{'Redis':>6} {'wrk':>6} {'others':>6}"
    )
    print(head)
    names = {
        "single": "POST /v1/tasks",
        "batch_1": f"POST /v1/tasks/batch x{batch_size}",
        "batch_4": f"POST /v1/tasks/batch x{batch_size}",
    }
    for key, label in names.items():
        f = figures[key]
        print(
            f"{label:<26} {f['connections']:>5} {f['requests']:>8,} {f['requests_per_s']:>8,.0f} "
            f"{f['tasks_per_s']:>8,.0f} {f['p50_ms']:>7.2f} {f['p99_ms']:>7.2f} "
            f"{f['errors']:>6} {f['api_cpu_s_per_1k_requests']:>8.3f} "
            f"{f['postgres_cpu_s_per_1k_requests']:>7.3f} "
            f"{f['redis_cpu_s_per_1k_requests']:>6.3f} {f['wrk_cpu_s_per_1k_requests']:>6.3f} "
            f"{f['other_cores']:>6.2f}"
        )
    print("others: cores used on average by other processes on the machine meanwhile")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=20_000, help="single-task requests")
    p.add_argument("--connections", type=int, default=64, help="for the single-task phase")
    p.add_argument("--batch-requests", type=int, default=40, help="batch requests per phase")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    a = p.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_MISSING)
    result = measure(
        requests=a.requests, connections=a.connections, batch_requests=a.batch_requests
    )
    print_table(result)
    if a.json:
        print(json.dumps(result, indent=2))
