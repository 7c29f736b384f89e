"""The worker engine: lease batches, flip them to RUNNING, run handlers under a slot pool,
heartbeat the leases, and hand outcomes to the recorder (DESIGN §5, Run)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import secrets
import socket
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import msgspec

from taskd import logs, metrics
from taskd.config.settings import RetrySettings, WorkerSettings
from taskd.errors import DependencyUnavailable
from taskd.queue.client import HandOff, Leased, RedisQueue, Requeue, Waiter
from taskd.registry import Registry, TaskContext
from taskd.services.recorder import Recorder
from taskd.services.runner import Runner
from taskd.services.slots import Slots
from taskd.store.tasks import RunDefaults, TaskStore
from taskd.types import LeasedTask

log = logging.getLogger("taskd.worker")


# Delayed tasks due within this many seconds are waited for with a local timer.
PRECISE_WAIT = 0.25
# A hand-off registration outlives the wait it is made for by this much, so that it is still
# live while the worker is between two lease calls (a lapsed one gets no hand-offs).
REGISTRATION_SLACK = 2.0


def _until_due(leased: Leased) -> float:
    """Seconds until the next delayed task is due (``math.inf`` when none is delayed)."""
    return math.inf if leased.wait_ms < 0 else leased.wait_ms / 1000


async def _outcome(task: asyncio.Task[HandOff | None]) -> HandOff | None:
    """The task's result, or None when it was cancelled or failed."""
    try:
        return await task
    except (asyncio.CancelledError, Exception):
        return None


def make_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Held:
    """A lease this worker holds until its outcome is settled."""

    task: LeasedTask
    ctx: TaskContext
    handler: asyncio.Task[None] | None = None
    lost: bool = False
    cancel_requested: bool = False
    timed_out: bool = False


@dataclass
class _Backoff:
    """Per-loop pause that grows while a dependency is down; ``logged`` is shared by the
    worker's loops so an outage is logged once per worker, not once per loop."""

    logged: set[str]
    delay: float = 0.05

    async def pause(self, what: str, error: Exception) -> None:
        if what not in self.logged:
            log.warning("%s unavailable, pausing leasing: %s", what, error)
            self.logged.add(what)
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 5.0)

    def reset(self) -> None:
        if self.delay > 0.05 and self.logged:
            log.warning("leasing resumed")
            self.logged.clear()
        self.delay = 0.05


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        retry: RetrySettings,
        store: TaskStore,
        queue: RedisQueue,
        registry: Registry,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.retry = retry
        self.store = store
        self.queue = queue
        self.registry = registry
        self.id = worker_id or settings.id or make_worker_id()
        self.slots = Slots(settings.concurrency)
        self.runner = Runner(registry, retry.backoff)
        self.recorder = Recorder(
            store,
            queue,
            max_rows=settings.flush_max_rows,
            interval=settings.flush_interval_seconds,
            on_settled=self._settled,
        )
        self.held: dict[str, Held] = {}
        self._seq = itertools.count(1)
        self._stopping = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._defaults = self._run_defaults()
        self._outages: set[str] = set()
        self.failure: BaseException | None = None

    @property
    def lease_ms(self) -> int:
        return int(self.settings.lease_seconds * 1000)

    def _run_defaults(self) -> RunDefaults:
        specs = [self.registry.get(n) for n in self.registry.names()]
        return RunDefaults(
            types=[s.name for s in specs if s],
            max_retries=[s.max_retries for s in specs if s],
            timeouts=[s.timeout for s in specs if s],
            max_retries_default=self.retry.max_retries,
            timeout_default=self.retry.timeout,
        )

    def stop(self) -> None:
        """Stop leasing; ``run`` then drains and returns."""
        self._stopping.set()
        self.slots.close()

    def retune(self, concurrency: int, retry: RetrySettings) -> None:
        """Apply a reloaded configuration (DESIGN §7): the slot pool grows at once and shrinks
        as running handlers end; new retry defaults apply to attempts started from now on."""
        if concurrency != self.slots.capacity:
            log.info("worker %s: %d -> %d slots", self.id, self.slots.capacity, concurrency)
            self.slots.resize(concurrency)
            self.settings = msgspec.structs.replace(self.settings, concurrency=concurrency)
        if retry != self.retry:
            self.retry = retry
            self.runner.default_backoff = retry.backoff
            self._defaults = self._run_defaults()

    async def run(self) -> None:
        log.info(
            "worker %s serving %s with %d slots",
            self.id,
            ",".join(self.settings.queues),
            self.settings.concurrency,
        )
        self._export_gauges()
        background = [
            asyncio.create_task(self.recorder.run(), name="recorder"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._cancel_listener(), name="cancel listener"),
        ]
        for t in background:
            t.add_done_callback(self._background_ended)
        loops = [
            asyncio.create_task(self._lease_loop(q), name=f"lease-{q}")
            for q in self.settings.queues
            for _ in range(self.settings.lease_loops)
        ]
        try:
            await self._stopping.wait()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._drain()
        finally:
            for t in [*loops, *background]:
                t.cancel()
            await asyncio.gather(*loops, *background, return_exceptions=True)
        log.info("worker %s stopped", self.id)
        if self.failure is not None:
            raise self.failure

    def _export_gauges(self) -> None:
        """Slot gauges are read at scrape time, costing the hot path nothing."""
        metrics.WORKER_SLOTS.set_function(lambda: self.slots.capacity)
        metrics.WORKER_IN_FLIGHT.set_function(lambda: len(self._handlers))
        metrics.WORKER_FREE_SLOTS.set_function(lambda: self.slots.free)
        metrics.WORKER_OUTCOME_BACKLOG.set_function(lambda: self.recorder.backlog)
        for queue in self.settings.queues:
            metrics.LEASES_LOST.labels(queue)  # exported as 0 until a lease is lost

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        """A loop that must run forever ended: stop the worker so it is restarted, loudly."""
        if task.cancelled() or self._stopping.is_set():
            return
        self.failure = task.exception() or RuntimeError(f"{task.get_name()} loop ended")
        log.critical(
            "worker %s: the %s loop died, stopping", self.id, task.get_name(), exc_info=self.failure
        )
        self.stop()

    async def _drain(self) -> None:
        """SIGTERM: let handlers finish within the grace period, then interrupt the rest."""
        grace = self.settings.shutdown_grace_seconds
        if self._handlers:
            log.info("waiting up to %gs for %d running handlers", grace, len(self._handlers))
            _, late = await asyncio.wait(self._handlers, timeout=grace)
            for t in late:
                t.cancel(msg="shutdown")
            if late:
                await asyncio.wait(late)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(grace, 5.0)):
                await self.recorder.drained()

    async def _lease_loop(self, queue: str) -> None:
        """Lease, start, wait for work; never dies (a loop that stopped would strand its slots
        and leave the worker idle while it looks alive)."""
        backoff = _Backoff(self._outages)
        waiter: Waiter | None = None  # this loop's hand-off registration, while it may be live
        while not self._stopping.is_set():
            taken = await self.slots.take(self.settings.lease_batch)
            if taken == 0 or self._stopping.is_set():
                self.slots.give(taken)
                break
            try:
                leased = await self._lease(queue, taken, waiter)
                waiter = leased.waiter
                if leased.ids:
                    await self._start_leased(queue, leased.ids, leased.tokens)
                elif waiter is not None:
                    handed, live = await self._idle_wait(waiter, _until_due(leased))
                    if not live:  # used up by the hand-off, or retired as the worker stops
                        waiter = None
                    if handed is not None:
                        await self._take_hand_off(queue, handed)
            except DependencyUnavailable as e:
                await backoff.pause(type(e).__name__, e)
                continue
            except Exception as e:
                log.exception("leasing from %s failed", queue)
                await backoff.pause(type(e).__name__, e)
                continue
            backoff.reset()
        if waiter is not None:
            await self._retire(waiter)

    async def _lease(self, queue: str, taken: int, retire: Waiter | None) -> Leased:
        """Lease up to ``taken`` tasks (registering for hand-offs when there are none), and
        give back the slots not used; ``retire`` is the loop's previous registration."""
        token_prefix = f"{self.id}:{next(self._seq)}"
        idle_ms = int((self.settings.idle_wait_seconds + REGISTRATION_SLACK) * 1000)
        try:
            leased = await self.queue.lease(
                queue, taken, token_prefix, self.lease_ms, idle_ms=idle_ms, retire=retire
            )
        except BaseException:
            self.slots.give(taken)
            raise
        self.slots.give(taken - len(leased.ids))
        return leased

    async def _start_leased(self, queue: str, ids: list[str], tokens: list[str]) -> None:
        """Flip leased tasks to RUNNING and start them. Holds one slot per id on entry.

        Every slot is either handed to a started task (which gives it back when it ends) or
        given back here, on every path, errors included.
        """
        try:
            started = await self.store.flip_running(ids, tokens, self.id, self._defaults)
        except BaseException:
            # Give the tasks back unstarted (no attempt was counted). If the flip did commit,
            # the rows are RUNNING without a lease and rescue reclaims them.
            self.slots.give(len(ids))
            items = [Requeue(i, t, 0, 0) for i, t in zip(ids, tokens, strict=True)]
            with contextlib.suppress(DependencyUnavailable):
                await self.queue.retry(queue, items)
            raise
        flipped = {t.id for t in started}
        dropped = [(i, t) for i, t in zip(ids, tokens, strict=True) if i not in flipped]
        self.slots.give(len(dropped))
        try:
            parents = await self._parent_results(started)
        except BaseException:
            # Flipped but not started: their leases expire and the attempts are recorded LOST.
            self.slots.give(len(started))
            raise
        for task in started:
            self._start(task, parents.get(task.id, {}))
        # Let the handlers take their first step before this loop goes on to lease again:
        # otherwise preparing the next lease call comes first on a task's path to its handler.
        await asyncio.sleep(0)
        # One increment per type of the batch: a locked increment per task is measurable here.
        for (queue_name, type_), n in Counter((t.queue, t.type) for t in started).items():
            metrics.task_series(queue_name, type_).started.inc(n)
        if dropped:  # cancelled or already finished: forget the lease (or let it expire)
            with contextlib.suppress(DependencyUnavailable):
                await self.queue.ack(queue, dropped)

    async def _take_hand_off(self, queue: str, handed: HandOff) -> None:
        """Start a task another script leased to this loop; release it unstarted when no slot
        is free any more (another queue's loop took the last one meanwhile)."""
        if self.slots.try_take(1) == 1:
            await self._start_leased(queue, [handed.id], [handed.token])
            return
        await self.queue.retry(queue, [handed.release()])

    async def _parent_results(self, tasks: list[LeasedTask]) -> dict[str, dict[str, Any]]:
        """``ctx.parent_results`` of the tasks that have parents (one query for the batch)."""
        children = [t.id for t in tasks if t.has_parents]
        if not children:
            return {}
        return await self.store.parent_results(children)

    async def _idle_wait(self, waiter: Waiter, until_due: float) -> tuple[HandOff | None, bool]:
        """Wait for a hand-off, or for the stop signal, whichever comes first. Returns the
        task handed over (if any) and whether the registration may still be live."""
        wait = asyncio.create_task(self._wait_for_work(waiter, until_due))
        stopper = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait({wait, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if wait in done:
            if wait.exception() is not None:
                await asyncio.sleep(min(until_due, 1.0))
                return None, True
            handed = wait.result()
            return handed, handed is None
        # Stopping: end the registration first. Its empty entry makes a blocked BLPOP return
        # at once; a BLPOP already served returns its hand-off, which is released unstarted.
        retired = await self._retire(waiter)
        if not retired:
            wait.cancel()
        handed = await _outcome(wait)
        if handed is not None:
            with contextlib.suppress(DependencyUnavailable):
                await self.queue.retry(waiter.queue, [handed.release()])
        return None, not retired

    async def _retire(self, waiter: Waiter) -> bool:
        """End a hand-off registration; False when Redis could not be told (it lapses)."""
        try:
            await self.queue.retire(waiter)
        except DependencyUnavailable as e:
            log.warning("worker %s: could not retire an idle registration: %s", self.id, e)
            return False
        return True

    async def _wait_for_work(self, waiter: Waiter, until_due: float) -> HandOff | None:
        """Block on the waiter's inbox, or sleep precisely when a delayed task is due soon.

        Redis checks blocking timeouts on its own timer (every 100 ms at the default hz), so a
        BLPOP timeout alone would start delayed tasks up to 100 ms late: the last stretch before
        a due time is slept here instead. A task due exactly one idle period away counts as due
        soon (it started 100 ms late when only due times under the idle period did).
        """
        idle = self.settings.idle_wait_seconds
        if until_due <= PRECISE_WAIT:
            await asyncio.sleep(until_due)
            return None
        if until_due <= idle:
            return await self.queue.wait(waiter, until_due - PRECISE_WAIT)
        return await self.queue.wait(waiter, idle)

    def _start(self, task: LeasedTask, parent_results: dict[str, Any]) -> None:
        ctx = TaskContext(
            task_id=task.id,
            attempt=task.attempt,
            type=task.type,
            queue=task.queue,
            tenant=task.tenant,
            parent_results=parent_results,
        )
        held = Held(task, ctx)
        self.held[task.id] = held
        metrics.task_series(task.queue, task.type).wait_seconds.observe(task.waited)
        handler = asyncio.create_task(self._execute(held))  # unnamed: naming costs 4 % CPU
        held.handler = handler
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)

    async def _execute(self, held: Held) -> None:
        task = held.task
        # This asyncio task's own context: every line logged while it runs names the task.
        logs.bind_task(task.id, task.attempt, task.queue, task.type)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        timer = loop.call_at(loop.time() + task.timeout, self._time_out, held)
        try:
            outcome = await self.runner.run(task, held.ctx)
        except asyncio.CancelledError:
            if held.lost:  # another worker owns the task now; record nothing
                self.held.pop(task.id, None)
                return
            if held.cancel_requested:
                outcome = self.runner.cancelled(task)
            elif held.timed_out:
                current = asyncio.current_task()
                if current is not None:  # the cancel was ours, not the caller's: absorb it
                    current.uncancel()
                outcome = self.runner.timed_out(task)
            else:
                outcome = await self.runner.interrupted(task)
        finally:
            timer.cancel()
            metrics.task_series(task.queue, task.type).run_seconds.observe(
                time.perf_counter() - started
            )
            self.slots.give(1)
        if held.lost:
            self.held.pop(task.id, None)
            return
        self.recorder.submit(task, outcome)

    def _time_out(self, held: Held) -> None:
        """The attempt's timeout passed: stop its handler (unless something else already is)."""
        if held.lost or held.cancel_requested or held.handler is None or held.handler.done():
            return
        held.timed_out = True
        held.handler.cancel(msg="timeout")

    def _settled(self, task: LeasedTask, recorded: bool) -> None:
        self.held.pop(task.id, None)

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
            except DependencyUnavailable as e:
                log.warning("heartbeat failed: %s", e)
            except Exception:
                log.exception("heartbeat failed")

    async def heartbeat(self) -> None:
        """Extend every held lease; a lease taken over by another worker cancels its handler."""
        by_queue: dict[str, list[Held]] = defaultdict(list)
        for held in list(self.held.values()):
            by_queue[held.task.queue].append(held)
        for queue, items in by_queue.items():
            pairs = [(h.task.id, h.task.lease_token) for h in items]
            codes = await self.queue.extend(queue, pairs, self.lease_ms)
            settled: list[tuple[str, str]] = []
            for held, code in zip(items, codes, strict=True):
                if self.held.get(held.task.id) is not held:
                    if code == 2:
                        settled.append((held.task.id, held.task.lease_token))
                elif code == 0 and not held.lost:
                    self._lose(held)
                elif code == 3:
                    self.cancel(held.task.id)
            if settled:
                # Recorded and acked while this heartbeat was on its way: the extend restored
                # their leases as if Redis had lost them. Take them out again (ack is
                # idempotent), or they would sit in the active set until the reaper came by.
                await self.queue.ack(queue, settled)

    def cancel(self, task_id: str) -> bool:
        """Cancel the handler of a task this worker holds (a cancel request reached it)."""
        held = self.held.get(task_id)
        if held is None or held.lost or held.cancel_requested:
            return False
        held.cancel_requested = True
        held.ctx.request_cancel()
        if held.handler is not None and not held.handler.done():
            held.handler.cancel(msg="cancel requested")
        log.info("cancelling task %s attempt %d on request", task_id, held.task.attempt)
        return True

    async def _cancel_listener(self) -> None:
        """Act on cancel requests as they are published; resubscribe after an outage (the
        heartbeat sees requests missed meanwhile)."""
        while True:
            try:
                async for task_id in self.queue.cancellations():
                    self.cancel(task_id)
            except DependencyUnavailable as e:
                log.warning("cancel subscription: %s; resubscribing", e)
                await asyncio.sleep(1.0)

    def _lose(self, held: Held) -> None:
        held.lost = True
        held.ctx.request_cancel()
        metrics.LEASES_LOST.labels(held.task.queue).inc()
        t = held.task
        log.warning(
            "lost the lease of task %s attempt %d",
            t.id,
            t.attempt,
            extra=logs.task_fields(t.id, t.attempt, t.queue, t.type),
        )
        if held.handler is not None and not held.handler.done():
            held.handler.cancel(msg="lease lost")
