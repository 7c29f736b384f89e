"""celery with the Redis broker: processing and submit throughput (runs in the celery venv).

celery tasks are sync, so the handler is a sync no-op. No result backend and
``task_ignore_result``; ``task_acks_late`` so a message stays in kombu's ``unacked`` hash until
its task has run: done = N - (LLEN celery + HLEN unacked), celery's own broker state. Worker:
``celery worker`` with ``--without-gossip --without-mingle --without-heartbeat`` and, per
variant, ``-P threads -c 200``, ``-P gevent -c 200`` or ``-P solo``. Submit: ``delay()`` from 64
threads; bulk: ``group(...).apply_async()`` of 1,000 signatures (still one message per task).
"""

from __future__ import annotations

import sys
import time
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from celery import Celery, group  # type: ignore[import-not-found]

if TYPE_CHECKING:  # mypy, from the repo root
    from bench.peers import common
else:  # run as a script (or imported by a worker) from bench/peers, in the peer's venv
    import common

app = Celery("celery_bench", broker=common.REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

VARIANTS = {
    "threads-200": ["-P", "threads", "-c", "200"],
    "gevent-200": ["-P", "gevent", "-c", "200"],
    "solo": ["-P", "solo"],
}


def noop() -> None:
    return None


noop_task = app.task(name="noop")(noop)


def remaining_fn(conn: common.Resp) -> Any:
    def remaining() -> int:
        queued, unacked = conn.pipeline([("LLEN", "celery"), ("HLEN", "unacked")])
        return int(queued) + int(unacked)

    return remaining


def _send_groups(sizes: list[int]) -> float:
    """Seconds to send one group per size, one after the other."""
    started = time.perf_counter()
    for size in sizes:
        group(noop_task.s() for _ in range(size)).apply_async()
    return time.perf_counter() - started


def _single(n: int) -> float:
    noop_task.delay()  # warm the producer pool, then measure n more
    return common.submit_threaded(n - 1, noop_task.delay)


def processing(n: int, variant: str) -> tuple[common.Processing, str]:
    _send_groups([1, *common.batches(n - 1)])
    conn = common.Resp()
    remaining = remaining_fn(conn)
    common.expect_remaining(remaining, n, "enqueue")
    argv = [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", "-l", "WARNING"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", *VARIANTS[variant]]
    try:
        result = common.run_worker(argv, n, remaining)
    finally:
        conn.close()
    config = (
        f"celery worker {' '.join(VARIANTS[variant])}, Redis broker, acks_late, "
        "no result backend, without gossip/mingle/heartbeat"
    )
    return result, config


def submit(n: int) -> common.SubmitResult:
    single = _single(n + 1)
    conn = common.Resp()
    try:
        common.expect_remaining(remaining_fn(conn), n + 1, "submit")
        conn.call("FLUSHDB")
        _send_groups([1])  # the same warm-up as above
        bulk = _send_groups(list(common.batches(n)))
        common.expect_remaining(remaining_fn(conn), n + 1, "bulk submit")
    finally:
        conn.close()
    return common.SubmitResult(single, bulk, ["bulk = group of 1,000 (one message per task)"])


if __name__ == "__main__":
    common.main(common.Peer("celery", version("celery"), processing, submit, list(VARIANTS)))
