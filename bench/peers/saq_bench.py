"""saq: processing and submit throughput (runs in the saq venv; see common.py for the modes).

Worker: the ``saq`` CLI with ``settings`` below (Redis queue, concurrency=200, uvloop policy set
on import, saq's default ERROR logging). Jobs are enqueued with ttl=-1, so nothing is kept after
they finish. Done = N - ZCARD of saq's "incomplete" sorted set (``Queue.count("incomplete")``):
saq removes a job from it when the job finishes. saq has no bulk enqueue (``map`` enqueues one
by one and waits for the results).
"""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from saq import Queue  # type: ignore[import-not-found]

if TYPE_CHECKING:  # mypy, from the repo root
    from bench.peers import common
else:  # run as a script (or imported by a worker) from bench/peers, in the peer's venv
    import common

if os.environ.get("PEERS_UVLOOP") == "1":  # the worker process, before saq makes its loop
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

INCOMPLETE_KEY = "saq:default:incomplete"


async def noop(ctx: dict[str, Any]) -> None:
    return None


def settings() -> dict[str, Any]:
    """The worker settings; a callable so the client does not build a queue it won't use."""
    return {"queue": Queue.from_url(common.REDIS_URL), "functions": [noop], "concurrency": 200}


def remaining_fn(conn: common.Resp) -> Any:
    return lambda: conn.call("ZCARD", INCOMPLETE_KEY)


async def _enqueue(n: int) -> float:
    queue = Queue.from_url(common.REDIS_URL)
    await queue.connect()
    try:
        await queue.enqueue("noop", ttl=-1)  # warm the connection pool, then measure n more
        return await common.submit_concurrently(n - 1, lambda: queue.enqueue("noop", ttl=-1))
    finally:
        await queue.disconnect()


def processing(n: int, variant: str) -> tuple[common.Processing, str]:
    asyncio.run(_enqueue(n))
    conn = common.Resp()
    remaining = remaining_fn(conn)
    common.expect_remaining(remaining, n, "enqueue")
    argv = [sys.executable, "-m", "saq", "saq_bench.settings"]
    try:
        result = common.run_worker(argv, n, remaining, env={"PEERS_UVLOOP": "1"})
    finally:
        conn.close()
    return result, "saq CLI, Redis queue, concurrency=200, job ttl=-1 (no result kept), uvloop"


def submit(n: int) -> common.SubmitResult:
    elapsed = asyncio.run(_enqueue(n + 1))
    conn = common.Resp()
    try:
        common.expect_remaining(remaining_fn(conn), n + 1, "submit")
    finally:
        conn.close()
    return common.SubmitResult(elapsed, None, ["no bulk enqueue in saq"])


if __name__ == "__main__":
    common.main(common.Peer("saq", version("saq"), processing, submit))
