"""procrastinate (Postgres): processing and submit throughput (runs in the procrastinate venv).

Every run gets a scratch database ``peers_bench_<random>`` (schema applied by procrastinate),
dropped afterwards. The handler is an ``async`` no-op; procrastinate stores no results, and
keeps finished jobs (``delete_jobs="never"``, its default). Worker: ``App.run_worker_async``
(concurrency=200) under uvloop, in its own process (``python procrastinate_bench.py worker``;
procrastinate's CLI starts its loop with ``asyncio.run``, so uvloop cannot be slipped in).
Done = N - the jobs in status todo/doing (procrastinate's jobs table), polled every 5 ms until
the first is done, then every 100 ms (each count costs Postgres ~1 ms; the run lasts ~25 s).
Submit: ``defer_async`` from 64 coroutines; bulk: ``batch_defer_async`` of 1,000.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import procrastinate  # type: ignore[import-not-found]
import psycopg  # type: ignore[import-not-found]

if TYPE_CHECKING:  # mypy, from the repo root
    from bench.peers import common
else:  # run as a script (or imported by a worker) from bench/peers, in the peer's venv
    import common

POOL_SIZE = 10  # psycopg pool per process; 4 and 30 measured the same as 10
# The scripts run as __main__, which procrastinate warns about; the task name is explicit.
logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
REMAINING_SQL = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"


async def noop() -> None:
    return None


def make_app(url: str) -> tuple[Any, Any]:
    """The app on the scratch database and its registered no-op task."""
    connector = procrastinate.PsycopgConnector(conninfo=url, min_size=4, max_size=POOL_SIZE)
    app = procrastinate.App(connector=connector)
    return app, app.task(name="noop")(noop)


@contextmanager
def scratch_database() -> Iterator[str]:
    """Create ``peers_bench_<random>``, yield its URL, drop it afterwards."""
    name = f"peers_bench_{secrets.token_hex(4)}"
    with psycopg.connect(common.PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield common.PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def remaining_fn(conn: Any) -> Any:
    return lambda: conn.execute(REMAINING_SQL).fetchone()[0]


async def _prepare(url: str) -> None:
    app, _ = make_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def _bulk(url: str, n: int) -> float:
    app, task = make_app(url)
    async with app.open_async():
        await task.batch_defer_async({})  # warm the pool, then measure n more
        started = time.perf_counter()
        for size in common.batches(n - 1):
            await task.batch_defer_async(*({} for _ in range(size)))
        return time.perf_counter() - started


async def _single(url: str, n: int) -> float:
    app, task = make_app(url)
    async with app.open_async():
        await task.defer_async()  # warm the pool, then measure n more
        return await common.submit_concurrently(n - 1, task.defer_async)


def processing(n: int, variant: str) -> tuple[common.Processing, str]:
    with scratch_database() as url, psycopg.connect(url, autocommit=True) as conn:
        asyncio.run(_prepare(url))
        asyncio.run(_bulk(url, n))
        remaining = remaining_fn(conn)
        common.expect_remaining(remaining, n, "enqueue")
        argv = [sys.executable, "procrastinate_bench.py", "worker", url]
        db = url.rsplit("/", 1)[1]
        result = common.run_worker(argv, n, remaining, timeout=150, slow_poll=0.1, pg_db=db)
    config = (
        f"App.run_worker_async(concurrency=200), pool max_size={POOL_SIZE}, listen_notify, "
        "delete_jobs=never, uvloop"
    )
    return result, config


def submit(n: int) -> common.SubmitResult:
    with scratch_database() as url, psycopg.connect(url, autocommit=True) as conn:
        asyncio.run(_prepare(url))
        single = asyncio.run(_single(url, n + 1))
        common.expect_remaining(remaining_fn(conn), n + 1, "submit")
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")
        bulk = asyncio.run(_bulk(url, n + 1))
        common.expect_remaining(remaining_fn(conn), n + 1, "bulk submit")
    return common.SubmitResult(single, bulk, [f"client pool max_size={POOL_SIZE}"])


def run_worker(url: str) -> None:
    import uvloop

    logging.basicConfig(level=logging.WARNING)
    app, _ = make_app(url)

    async def work() -> None:
        async with app.open_async():
            await app.run_worker_async(concurrency=200)

    uvloop.run(work())


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        run_worker(sys.argv[2])
    else:
        common.main(common.Peer("procrastinate", version("procrastinate"), processing, submit))
