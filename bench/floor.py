"""The latency floor: bench.latency's workload through the same hops with nothing else.

    python -m bench.floor [--rate 200] [--seconds 10]

What taskd's submit -> start path cannot do without: an HTTP request to an api process, an
INSERT committed there (synchronous commit), a Redis push that wakes a blocked worker process,
an UPDATE committed there, and the handler's first line. Here each is one bare call (aiohttp,
asyncpg, redis-py, uvloop, as in taskd) and there is nothing else: no auth, validation, leases,
fencing, metrics or logs. The same client, rate and clock as ``bench.latency``, so the two
tables compare directly: the difference is what taskd's own code costs on this path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import uvloop
from aiohttp import web

from bench.common import REDIS_URL, ROOT, free_port, scratch_database
from bench.latency import Client, open_loop, print_table, started_lags, summary
from bench.submit import Api, wait_ready

TABLE = "CREATE TABLE floor_tasks (id uuid PRIMARY KEY, payload jsonb NOT NULL, status text)"


async def serve_api(port: int, db_url: str, wake: str) -> None:
    """POST /v1/tasks: INSERT (committed), LPUSH the id, answer 201."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    queue = aioredis.Redis.from_url(REDIS_URL)

    async def submit(request: web.Request) -> web.Response:
        body = await request.json()
        task_id = uuid.uuid4()
        payload = json.dumps(body["payload"])
        await pool.execute(
            "INSERT INTO floor_tasks (id, payload, status) VALUES ($1, $2, 'PENDING')",
            task_id,
            payload,
        )
        await queue.lpush(wake, str(task_id))
        return web.json_response({"id": str(task_id)}, status=201)

    app = web.Application()
    app.router.add_post("/v1/tasks", submit)
    app.router.add_get("/readyz", lambda _: web.json_response({}))  # type: ignore[arg-type,return-value]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def serve_worker(db_url: str, wake: str) -> None:
    """BLPOP an id, UPDATE it to RUNNING (committed), record send -> here like the handler."""
    conn = await asyncpg.connect(db_url)
    queue = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    while True:
        got = await queue.blpop([wake], timeout=1)
        if got is None:
            continue
        payload = await conn.fetchval(
            "UPDATE floor_tasks SET status = 'RUNNING' WHERE id = $1 RETURNING payload",
            uuid.UUID(str(got[1])),
        )
        p = json.loads(payload)
        lag = time.time() - p["sent"]
        await queue.rpush(p["list"], f"{p['seq']} {lag:.6f}")


@contextmanager
def _process(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.floor", *args], cwd=ROOT)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def measure_async(rate: float, seconds: float, warmup: float = 1.0) -> dict[str, Any]:
    wake = f"taskd-bench:floor-wake:{secrets.token_hex(4)}"
    key = f"taskd-bench:floor:{secrets.token_hex(4)}"
    port = free_port()
    async with scratch_database() as db_url:
        setup = await asyncpg.connect(db_url)
        await setup.execute(TABLE)
        await setup.close()
        with (
            _process("--serve-api", str(port), db_url, wake) as api_proc,
            _process("--serve-worker", db_url, wake),
        ):
            api = Api(api_proc, f"http://127.0.0.1:{port}", "unused", "floor")
            await wait_ready(api.base, api_proc)
            client = Client(api)
            try:
                _, codes = await open_loop(client, "floor", key, rate, warmup, 0)
                await started_lags(key, len(codes))
                answered, codes = await open_loop(client, "floor", key, rate, seconds, 10**6)
                started = await started_lags(key, len(answered))
            finally:
                await client.close()
    return summary(rate, seconds, answered, codes, started, 0.0)


def measure(rate: float = 200.0, seconds: float = 10.0) -> dict[str, Any]:
    return uvloop.run(measure_async(rate, seconds))


def print_floor(result: dict[str, Any]) -> None:
    print("\nthe floor: the same hops, bare (bench/floor.py)", end="")
    print_table(result)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--serve-api", nargs=3, metavar=("PORT", "DB", "WAKE"), help=argparse.SUPPRESS)
    p.add_argument("--serve-worker", nargs=2, metavar=("DB", "WAKE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve_api:
        port, db, wake = a.serve_api
        uvloop.run(serve_api(int(port), db, wake))
    elif a.serve_worker:
        uvloop.run(serve_worker(*a.serve_worker))
    else:
        print_floor(measure(a.rate, a.seconds))


if __name__ == "__main__":
    main()
