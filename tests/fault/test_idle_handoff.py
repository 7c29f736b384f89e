"""Idle workers take due tasks by hand-off (lua/_handoff.lua): a worker that dies or stops while
registered must not take a task with it."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

from taskd.queue.client import RedisQueue
from taskd.queue.keys import QueueKeys
from taskd.store.tasks import TaskStore
from tests.fault.checker import check_run
from tests.fault.harness import RedisServer, Taskd, processes, role_env
from tests.helpers import eventually, new_task, submit, wait_terminal


async def registered(queue: RedisQueue, queue_name: str) -> bool:
    """Both lease loops of the worker are registered as idle waiters."""
    return bool(await queue.client.zcard(QueueKeys(queue_name).idle) >= 2)


async def test_a_task_handed_to_a_worker_killed_while_idle_still_runs_once(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(database, redis_server.url, queue_name, exec_log)
    with processes() as procs:
        idle = Taskd(["worker"], env, "idle").start()
        procs.append(idle)
        await eventually(lambda: registered(fqueue, queue_name), timeout=10)
        idle.kill()
        # Its registrations outlive it by a few seconds: the task is leased to a dead inbox.
        [tid] = await submit(fstore, fqueue, new_task(queue_name, "fault.work"))
        assert await fqueue.tracked(queue_name, tid) == "active"
        procs.append(Taskd(["promoter"], env, "promoter").start())
        procs.append(Taskd(["worker"], env, "healthy").start())
        row = await wait_terminal(fstore, tid, timeout=20)
    # The lease expired and the task went back unstarted: one attempt, no LOST one.
    assert (row["status"], row["attempt"]) == ("SUCCESS", 1)
    history = await fstore.attempts(uuid.UUID(tid))
    assert [h["outcome"] for h in history] == ["SUCCESS"]
    report = await check_run(fstore.pool, [tid], exec_log)
    assert report.problems == [] and report.lost_attempts == 0


async def test_sigterm_on_an_idle_worker_retires_its_registrations(
    database: str,
    redis_server: RedisServer,
    fstore: TaskStore,
    fqueue: RedisQueue,
    exec_log: Path,
    queue_name: str,
) -> None:
    env = role_env(database, redis_server.url, queue_name, exec_log)
    with processes() as procs:
        worker = Taskd(["worker"], env, "worker").start()
        procs.append(worker)
        await eventually(lambda: registered(fqueue, queue_name), timeout=10)
        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 10) == 0
        assert await fqueue.client.zcard(QueueKeys(queue_name).idle) == 0
        # Nobody is waiting now: the task stays in line for the next worker.
        [tid] = await submit(fstore, fqueue, new_task(queue_name, "fault.work"))
        assert await fqueue.tracked(queue_name, tid) == "ready"
        procs.append(Taskd(["worker"], env, "next").start())
        row = await wait_terminal(fstore, tid, timeout=20)
    assert (row["status"], row["attempt"]) == ("SUCCESS", 1)
