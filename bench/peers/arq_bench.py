"""arq: processing and submit throughput (runs in the arq venv; see common.py for the modes).

Worker: the ``arq`` CLI with ``WorkerSettings`` below (max_jobs=200, keep_result=0, uvloop
policy set on import, log level WARNING); variants: poll_delay 0.01 s and arq's default 0.5 s
(arq sleeps poll_delay between reads of the queue, which caps a backlog's drain rate).
Done = N - ZCARD of arq's queue sorted set: arq removes a job from it only when the job has
finished. arq has no bulk enqueue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from arq import create_pool  # type: ignore[import-not-found]
from arq.connections import RedisSettings  # type: ignore[import-not-found]
from arq.constants import default_queue_name  # type: ignore[import-not-found]

if TYPE_CHECKING:  # mypy, from the repo root
    from bench.peers import common
else:  # run as a script (or imported by a worker) from bench/peers, in the peer's venv
    import common

if os.environ.get("PEERS_UVLOOP") == "1":  # the worker process, before arq makes its loop
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

REDIS = RedisSettings(host=common.REDIS_HOST, port=common.REDIS_PORT, database=common.REDIS_DB)
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["console"], "level": "WARNING"}},
}


async def noop(ctx: dict[str, Any]) -> None:
    return None


class WorkerSettings:
    functions = [noop]  # noqa: RUF012 (arq reads class attributes)
    redis_settings = REDIS
    max_jobs = 200
    keep_result = 0
    poll_delay = float(os.environ.get("PEERS_ARQ_POLL_DELAY", "0.5"))


def remaining_fn(conn: common.Resp) -> Any:
    return lambda: conn.call("ZCARD", default_queue_name)


async def _enqueue(n: int) -> float:
    pool = await create_pool(REDIS)
    try:
        await pool.enqueue_job("noop")  # warm the pool, then measure n more
        return await common.submit_concurrently(n - 1, lambda: pool.enqueue_job("noop"))
    finally:
        await pool.aclose()


VARIANTS = {"poll-0.01": "0.01", "poll-0.5": "0.5"}  # poll_delay: tuned, arq's default


def processing(n: int, variant: str) -> tuple[common.Processing, str]:
    poll_delay = VARIANTS[variant]
    asyncio.run(_enqueue(n))
    conn = common.Resp()
    remaining = remaining_fn(conn)
    common.expect_remaining(remaining, n, "enqueue")
    argv = [sys.executable, "-m", "arq", "arq_bench.WorkerSettings"]
    argv += ["--custom-log-dict", "arq_bench.LOG_CONFIG"]
    env = {"PEERS_UVLOOP": "1", "PEERS_ARQ_POLL_DELAY": poll_delay}
    try:
        result = common.run_worker(argv, n, remaining, env=env)
    finally:
        conn.close()
    config = f"arq CLI, max_jobs=200, keep_result=0, poll_delay={poll_delay}, uvloop"
    return result, config


def submit(n: int) -> common.SubmitResult:
    elapsed = asyncio.run(_enqueue(n + 1))
    conn = common.Resp()
    try:
        common.expect_remaining(remaining_fn(conn), n + 1, "submit")
    finally:
        conn.close()
    return common.SubmitResult(elapsed, None, ["no bulk enqueue in arq"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    common.main(common.Peer("arq", version("arq"), processing, submit, list(VARIANTS)))
