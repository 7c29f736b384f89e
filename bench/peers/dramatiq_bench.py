"""dramatiq with the Redis broker: processing and submit throughput (runs in the dramatiq venv).

The handler is an ``async`` no-op actor (dramatiq's ``AsyncIO`` middleware runs it on an event
loop thread; each worker thread waits for one coroutine). No results middleware (dramatiq stores
no results by default). Worker: ``dramatiq dramatiq_bench --processes 1 --threads T`` for each
variant's T. Done = N - HLEN of ``dramatiq:default.msgs``: dramatiq deletes a message from that
hash when it acknowledges it, after the actor ran. Submit: ``send()`` from 64 threads; bulk:
``group(...).run()`` of 1,000 messages (still one enqueue per message).
"""

from __future__ import annotations

import sys
import time
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import dramatiq  # type: ignore[import-not-found]
from dramatiq.brokers.redis import RedisBroker  # type: ignore[import-not-found]
from dramatiq.middleware.asyncio import AsyncIO  # type: ignore[import-not-found]

if TYPE_CHECKING:  # mypy, from the repo root
    from bench.peers import common
else:  # run as a script (or imported by a worker) from bench/peers, in the peer's venv
    import common

# redis-py 8 caps a pool at 100 connections and raises past that; each worker thread acks with a
# connection of its own, so leave room for --threads 200.
broker = RedisBroker(
    host=common.REDIS_HOST, port=common.REDIS_PORT, db=common.REDIS_DB, max_connections=1000
)
broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)

MESSAGES_KEY = "dramatiq:default.msgs"
VARIANTS = {"threads-32": "32", "threads-64": "64", "threads-200": "200", "threads-8": "8"}


async def noop() -> None:
    return None


noop_actor = dramatiq.actor(noop, actor_name="noop", queue_name="default")


def remaining_fn(conn: common.Resp) -> Any:
    return lambda: conn.call("HLEN", MESSAGES_KEY)


def _send_groups(sizes: list[int]) -> float:
    """Seconds to run one group per size, one after the other."""
    started = time.perf_counter()
    for size in sizes:
        dramatiq.group(noop_actor.message() for _ in range(size)).run()
    return time.perf_counter() - started


def processing(n: int, variant: str) -> tuple[common.Processing, str]:
    _send_groups([1, *common.batches(n - 1)])
    conn = common.Resp()
    remaining = remaining_fn(conn)
    common.expect_remaining(remaining, n, "enqueue")
    threads = VARIANTS[variant]
    argv = [sys.executable, "-m", "dramatiq", "dramatiq_bench"]
    argv += ["--processes", "1", "--threads", threads]
    try:
        result = common.run_worker(argv, n, remaining)
    finally:
        conn.close()
    config = f"dramatiq --processes 1 --threads {threads}, Redis broker, async actor (AsyncIO)"
    return result, config


def submit(n: int) -> common.SubmitResult:
    noop_actor.send()  # warm the connection pool, then measure n more
    single = common.submit_threaded(n, noop_actor.send)
    conn = common.Resp()
    try:
        common.expect_remaining(remaining_fn(conn), n + 1, "submit")
        conn.call("FLUSHDB")
        _send_groups([1])
        bulk = _send_groups(list(common.batches(n)))
        common.expect_remaining(remaining_fn(conn), n + 1, "bulk submit")
    finally:
        conn.close()
    return common.SubmitResult(single, bulk, ["bulk = group of 1,000 (one enqueue per message)"])


if __name__ == "__main__":
    common.main(common.Peer("dramatiq", version("dramatiq"), processing, submit, list(VARIANTS)))
