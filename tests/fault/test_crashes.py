"""Break real taskd processes (DESIGN §6) and prove nothing is lost or recorded twice."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from pathlib import Path

from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore
from tests.fault.checker import check_run
from tests.fault.harness import RedisServer, Taskd, processes, role_env
from tests.helpers import eventually, new_task, submit


async def count(store: TaskStore, status: str) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM tasks WHERE status = $1", status))


async def all_terminal(store: TaskStore, timeout: float) -> None:
    async def done() -> bool:
        left = await store.pool.fetchval(
            "SELECT count(*) FROM tasks WHERE status IN ('PENDING', 'RUNNING', 'WAITING')"
        )
        return int(left) == 0

    await eventually(done, timeout=timeout, interval=0.1)


async def test_kill_9_workers_mid_run(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(database, redis_server.url, queue_name, exec_log, WORKER__CONCURRENCY="8")
    rng = random.Random(7)
    tasks = [
        new_task(
            queue_name, "fault.work", max_retries=5, payload={"seconds": rng.uniform(0.1, 0.5)}
        )
        for _ in range(300)
    ]
    accepted = await submit(fstore, fqueue, *tasks)
    with processes() as procs:
        procs.append(Taskd(["promoter"], env, "promoter").start())
        workers = [Taskd(["worker"], env, f"worker{i}").start() for i in range(2)]
        procs.extend(workers)
        for kill, target in enumerate((20, 80, 140, 200)):
            await eventually(lambda t=target: _at_least(fstore, t), timeout=30)
            victim = workers[kill % 2]
            await eventually(lambda v=victim: _running_on(fstore, v), timeout=10)
            victim.kill()
            replacement = Taskd(["worker"], env, f"worker-r{kill}").start()
            workers[kill % 2] = replacement
            procs.append(replacement)
        started = time.monotonic()
        await all_terminal(fstore, timeout=60)
        recovery = time.monotonic() - started
    report = await check_run(fstore.pool, accepted, exec_log)
    assert report.problems == []
    assert report.succeeded == len(accepted)
    assert report.lost_attempts >= 4, "every kill -9 should have cut at least one task short"
    assert recovery < 60


async def _at_least(store: TaskStore, n: int) -> bool:
    return await count(store, "SUCCESS") >= n


async def _running_on(store: TaskStore, proc: Taskd) -> bool:
    assert proc.proc is not None
    n = await store.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE status = 'RUNNING' AND worker LIKE $1",
        f"%-{proc.proc.pid}-%",
    )
    return int(n) > 0


async def test_sigterm_drains_running_handlers_and_exits_0(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(database, redis_server.url, queue_name, exec_log, WORKER__CONCURRENCY="5")
    accepted = await submit(
        fstore,
        fqueue,
        *[new_task(queue_name, "fault.work", payload={"seconds": 1.5}) for _ in range(10)],
    )
    with processes() as procs:
        worker = Taskd(["worker"], env, "worker").start()
        procs.append(worker)
        await eventually(lambda: _exactly(fstore, "RUNNING", 5), timeout=10)
        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 10) == 0
        assert await count(fstore, "SUCCESS") == 5  # the running ones finished
        assert await count(fstore, "PENDING") == 5  # the rest were never started
        unstarted = await fstore.pool.fetchval(
            "SELECT count(*) FROM tasks WHERE status = 'PENDING' AND attempt = 0"
        )
        assert unstarted == 5  # released, not counted as attempts
        procs.append(Taskd(["worker"], env, "worker2").start())
        await all_terminal(fstore, timeout=20)
    report = await check_run(fstore.pool, accepted, exec_log)
    assert report.problems == [] and report.succeeded == 10 and report.lost_attempts == 0


async def _exactly(store: TaskStore, status: str, n: int) -> bool:
    return await count(store, status) == n


async def test_sigterm_past_the_grace_period_records_lost_attempts(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(
        database, redis_server.url, queue_name, exec_log, WORKER__SHUTDOWN_GRACE_SECONDS="0.3"
    )
    [tid] = await submit(fstore, fqueue, new_task(queue_name, "fault.work", payload={"seconds": 2}))
    with processes() as procs:
        worker = Taskd(["worker"], env, "worker").start()
        procs.append(worker)
        await eventually(lambda: _exactly(fstore, "RUNNING", 1), timeout=10)
        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 10) == 0
        row = await fstore.get(uuid.UUID(tid), None)
        assert (row["status"], row["attempt"]) == ("PENDING", 1)
        procs.append(Taskd(["worker"], env, "worker2").start())
        await all_terminal(fstore, timeout=20)
    history = await fstore.attempts(uuid.UUID(tid))
    assert [(h["attempt"], h["outcome"]) for h in history] == [(1, "LOST"), (2, "SUCCESS")]
    assert history[0]["error"]["type"] == "WorkerShutdown"


async def test_stalled_event_loop_loses_its_lease_and_its_late_write(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(database, redis_server.url, queue_name, exec_log, WORKER__LEASE_SECONDS="1")
    with processes() as procs:
        stalled = Taskd(["worker"], env, "stalled").start()
        procs.append(stalled)
        # Submitted only now: the stalled worker's loop blocks as soon as it takes the task.
        [tid] = await submit(
            fstore, fqueue, new_task(queue_name, "fault.block", payload={"seconds": 5})
        )
        await eventually(lambda: _exactly(fstore, "RUNNING", 1), timeout=10)
        procs.append(Taskd(["promoter"], env, "promoter").start())
        procs.append(Taskd(["worker"], env, "healthy").start())
        await all_terminal(fstore, timeout=20)
        # The stalled loop wakes up after ~4 s and tries to record attempt 1.
        await eventually(lambda: _logged(stalled, "dropped the outcome"), timeout=15)
    row = await fstore.get(uuid.UUID(tid), None)
    assert (row["status"], row["attempt"], row["result"]["attempt"]) == ("SUCCESS", 2, 2)
    history = await fstore.attempts(uuid.UUID(tid))
    assert [(h["attempt"], h["outcome"]) for h in history] == [(1, "LOST"), (2, "SUCCESS")]
    report = await check_run(fstore.pool, [tid], exec_log)
    assert report.problems == []


async def _logged(proc: Taskd, text: str) -> bool:
    return text in proc.log()


async def test_redis_flushall_and_restart_mid_run(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(database, redis_server.url, queue_name, exec_log, WORKER__CONCURRENCY="10")
    accepted = await submit(
        fstore,
        fqueue,
        *[new_task(queue_name, "fault.work", payload={"seconds": 0.3}) for _ in range(200)],
    )
    with processes() as procs:
        procs.append(Taskd(["promoter"], env, "promoter").start())
        procs.append(Taskd(["worker"], env, "worker").start())
        await eventually(lambda: _at_least(fstore, 20), timeout=20)
        redis_server.command("FLUSHALL")
        await eventually(lambda: _at_least(fstore, 80), timeout=30)
        redis_server.stop()  # a restart without persistence: everything is gone again
        redis_server.start()
        await all_terminal(fstore, timeout=60)
    report = await check_run(fstore.pool, accepted, exec_log)
    assert report.problems == []
    assert report.succeeded == len(accepted)


async def test_sigterm_with_every_slot_busy_honours_the_grace_period(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    """Lease loops parked on a full slot pool must not hold shutdown past the grace period."""
    env = role_env(
        database,
        redis_server.url,
        queue_name,
        exec_log,
        WORKER__CONCURRENCY="2",
        WORKER__SHUTDOWN_GRACE_SECONDS="0.5",
    )
    await submit(
        fstore,
        fqueue,
        *[new_task(queue_name, "fault.work", payload={"seconds": 30}) for _ in range(3)],
    )
    with processes() as procs:
        worker = Taskd(["worker"], env, "worker").start()
        procs.append(worker)
        await eventually(lambda: _exactly(fstore, "RUNNING", 2), timeout=10)
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0
        assert time.monotonic() - started < 10
    assert await count(fstore, "PENDING") == 3
    lost = await fstore.pool.fetchval("SELECT count(*) FROM attempts WHERE outcome = 'LOST'")
    assert lost == 2
