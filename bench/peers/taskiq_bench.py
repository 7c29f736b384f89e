"""taskiq with taskiq-redis: processing and submit throughput (runs in the taskiq venv).

Broker: ``RedisStreamBroker`` (a Redis stream read by a consumer group, messages acknowledged
after the task ran: taskiq's default ack type ``when_saved``), no result backend (taskiq's
default stores nothing). Worker: ``taskiq worker --workers 1 --max-async-tasks 200`` (taskiq
uses uvloop by itself when it is installed). Done = N - (pending + lag) of the consumer group
(XINFO GROUPS): delivered-and-unacknowledged plus not yet delivered. taskiq has no bulk enqueue.
"""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from taskiq_redis import RedisStreamBroker  # type: ignore[import-not-found]

if TYPE_CHECKING:  # mypy, from the repo root
    from bench.peers import common
else:  # run as a script (or imported by a worker) from bench/peers, in the peer's venv
    import common

STREAM = "taskiq"
GROUP = "taskiq"

broker = RedisStreamBroker(
    common.REDIS_URL, queue_name=STREAM, consumer_group_name=GROUP, consumer_id="0"
)


async def noop() -> None:
    return None


noop_task = broker.task(task_name="noop")(noop)


def remaining_fn(conn: common.Resp, n: int) -> Any:
    def remaining() -> int:
        try:
            groups = conn.call("XINFO", "GROUPS", STREAM)
        except common.RespError:  # no stream yet
            return n
        for flat in groups:
            info = dict(zip(flat[::2], flat[1::2], strict=True))
            if info[b"name"] == GROUP.encode():
                return int(info[b"pending"]) + int(info[b"lag"])
        return n

    return remaining


async def _enqueue(n: int) -> float:
    await broker.startup()  # creates the consumer group, so the worker sees earlier messages
    try:
        await noop_task.kiq()  # warm the connection pool, then measure n more
        return await common.submit_concurrently(n - 1, noop_task.kiq)
    finally:
        await broker.shutdown()


def processing(n: int, variant: str) -> tuple[common.Processing, str]:
    asyncio.run(_enqueue(n))
    conn = common.Resp()
    remaining = remaining_fn(conn, n)
    common.expect_remaining(remaining, n, "enqueue")
    argv = [sys.executable, "-m", "taskiq", "worker", "taskiq_bench:broker"]
    argv += ["--workers", "1", "--max-async-tasks", "200", "--log-level", "WARNING"]
    try:
        result = common.run_worker(argv, n, remaining)
    finally:
        conn.close()
    config = (
        "taskiq worker --workers 1 --max-async-tasks 200, RedisStreamBroker, "
        "ack when_saved, no result backend, uvloop"
    )
    return result, config


def submit(n: int) -> common.SubmitResult:
    elapsed = asyncio.run(_enqueue(n + 1))
    conn = common.Resp()
    try:
        common.expect_remaining(remaining_fn(conn, n), n + 1, "submit")
    finally:
        conn.close()
    return common.SubmitResult(elapsed, None, ["no bulk enqueue in taskiq"])


if __name__ == "__main__":
    common.main(common.Peer("taskiq", version("taskiq"), processing, submit))
