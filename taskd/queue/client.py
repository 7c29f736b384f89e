"""The queue adapter: typed calls over the Lua scripts, driver errors turned into taskd's."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskd.cancellation import raise_if_cancelling
from taskd.errors import QueueUnavailable, ScriptError
from taskd.queue.keys import CANCEL_CHANNEL, QueueKeys
from taskd.queue.scripts import Scripts

P = ParamSpec("P")
R = TypeVar("R")


def _translated(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # A cancel request redis-py dropped is raised again, whether the call then returned or
        # failed: callers retry failures, and would otherwise never end (taskd.cancellation).
        try:
            result = await fn(*args, **kwargs)
        except (RedisError, OSError, RuntimeError) as e:
            raise_if_cancelling()
            raise _taskd_error(e) from e
        raise_if_cancelling()
        return result

    return wrapper


def _taskd_error(e: RedisError | OSError | RuntimeError) -> QueueUnavailable | ScriptError:
    if isinstance(e, (RedisConnectionError, RedisTimeoutError, OSError)):
        return QueueUnavailable(f"Redis is unreachable: {e}")
    if isinstance(e, RuntimeError):
        # uvloop reports a write on a connection reset under it as RuntimeError
        # ("unable to perform operation on <TCPTransport closed=True>").
        return QueueUnavailable(f"Redis connection lost: {e}")
    return ScriptError(f"Redis error: {e}")


@dataclass(frozen=True, slots=True)
class Enqueue:
    id: str
    priority: int
    delay_ms: int


def pending_entries(rows: Iterable[Any]) -> Iterator[tuple[str, Enqueue]]:
    """``(queue, Enqueue)`` for the PENDING ones among freshly stored task rows (records read
    by column name, with ``delay_ms``); WAITING children are queued when released."""
    for r in rows:
        if r["status"] == "PENDING":
            yield r["queue"], Enqueue(str(r["id"]), r["priority"], int(r["delay_ms"]))


@dataclass(frozen=True, slots=True)
class Requeue:
    id: str
    token: str
    priority: int
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Waiter:
    """An idle lease loop's registration for hand-offs (lua/_handoff.lua)."""

    queue: str
    member: str  # "<lease_ms>/<token prefix>"
    token: str  # the token a task handed to this waiter is leased under

    @property
    def inbox(self) -> str:
        return f"{QueueKeys(self.queue).inbox_prefix}{self.member}"


@dataclass(frozen=True, slots=True)
class HandOff:
    """A task leased to a waiter by another script and pushed to its inbox."""

    id: str
    token: str
    priority: int

    def release(self) -> Requeue:
        """Give the task back unstarted, due now, in its place by priority."""
        return Requeue(self.id, self.token, self.priority, 0)


@dataclass(frozen=True, slots=True)
class Leased:
    ids: list[str]
    tokens: list[str]
    wait_ms: int  # until the next delayed task is due; -1 when none
    waiter: Waiter | None = None  # set when nothing was leased and registration was asked for


@dataclass(frozen=True, slots=True)
class QueueDepth:
    ready: int
    delayed: int
    active: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's depth by state (due tasks count as ready) and its oldest due task's wait."""

    ready: int
    delayed: int
    active: int
    oldest_ready_age: float  # seconds; 0 when nothing is due


class RedisQueue:
    """All queue operations of DESIGN §4. Every state change is one script call."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._scripts = Scripts(client)

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: float = 5.0, connect_timeout: float = 2.0
    ) -> RedisQueue:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            health_check_interval=10,
            decode_responses=True,
        )
        return cls(client)

    async def close(self) -> None:
        await self.client.aclose()

    @_translated
    async def ping(self) -> bool:
        return bool(await self.client.ping())

    @_translated
    async def enqueue(self, queue: str, items: Sequence[Enqueue]) -> int:
        if not items:
            return 0
        k = QueueKeys(queue)
        triples = itertools.chain.from_iterable((i.id, i.priority, i.delay_ms) for i in items)
        args = [k.lease_prefix, k.inbox_prefix, *triples]
        keys = [k.ready, k.delayed, k.active, k.idle]
        return int(await self._scripts.call("enqueue", keys, args))

    async def enqueue_grouped(self, items: Iterable[tuple[str, Enqueue]]) -> int:
        """Enqueue ``(queue, item)`` pairs with one script call per queue (a script may only
        touch one queue's keys); returns how many Redis did not have yet."""
        by_queue: dict[str, list[Enqueue]] = {}
        for queue, item in items:
            by_queue.setdefault(queue, []).append(item)
        added = 0
        for queue, batch in by_queue.items():
            added += await self.enqueue(queue, batch)
        return added

    @_translated
    async def lease(
        self,
        queue: str,
        count: int,
        token_prefix: str,
        lease_ms: int,
        *,
        idle_ms: int = 0,
        retire: Waiter | None = None,
    ) -> Leased:
        """Lease up to ``count`` tasks. When none is due and ``idle_ms`` > 0, the caller is
        registered for hand-offs for that long (``Leased.waiter``: wait on it, and pass it as
        ``retire`` to the next call, which adopts a hand-off that came after the wait ended)."""
        k = QueueKeys(queue)
        keys = [k.ready, k.delayed, k.active, k.idle]
        old = retire.member if retire else ""
        args = [count, lease_ms, token_prefix, k.lease_prefix, k.inbox_prefix, idle_ms, old]
        reply = await self._scripts.call("lease", keys, args)
        ids = [str(i) for i in reply[1:]]
        tokens = [f"{token_prefix}:{n}" for n in range(1, len(ids) + 1)]
        waiter = None
        if not ids and idle_ms > 0:
            waiter = Waiter(queue, f"{lease_ms}/{token_prefix}", f"{token_prefix}:1")
        return Leased(ids=ids, tokens=tokens, wait_ms=int(reply[0]), waiter=waiter)

    @_translated
    async def extend(self, queue: str, held: Sequence[tuple[str, str]], lease_ms: int) -> list[int]:
        """Heartbeat. Codes per (id, token): 1 extended, 2 restored, 0 lost, 3 cancel asked."""
        if not held:
            return []
        k = QueueKeys(queue)
        pairs = itertools.chain.from_iterable(held)
        args: list[Any] = [lease_ms, k.lease_prefix, k.cancel_prefix, *pairs]
        return [int(c) for c in await self._scripts.call("extend", [k.active], args)]

    @_translated
    async def cancel(self, queue: str, task_id: str, marker_ms: int) -> bool:
        """Remove a task from the queue; True when a worker held it and was asked to stop."""
        k = QueueKeys(queue)
        args = [task_id, k.cancel_prefix, CANCEL_CHANNEL, marker_ms]
        return bool(await self._scripts.call("cancel", [k.ready, k.delayed, k.active], args))

    async def cancellations(self) -> AsyncIterator[str]:
        """Task ids whose cancellation was requested, as they are published (until cancelled).

        Raises QueueUnavailable when the subscription breaks; the caller resubscribes.
        """
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CANCEL_CHANNEL)
            while True:
                message = await pubsub.get_message(timeout=1.0)
                raise_if_cancelling()
                if message is not None and message.get("type") == "message":
                    yield str(message["data"])
        except (RedisConnectionError, RedisTimeoutError, OSError, RuntimeError) as e:
            raise_if_cancelling()
            raise QueueUnavailable(f"Redis subscription lost: {e}") from e
        finally:
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    @_translated
    async def ack(self, queue: str, held: Sequence[tuple[str, str]]) -> list[int]:
        if not held:
            return []
        k = QueueKeys(queue)
        args: list[Any] = [k.lease_prefix, *itertools.chain.from_iterable(held)]
        return [int(c) for c in await self._scripts.call("ack", [k.active], args)]

    @_translated
    async def retry(self, queue: str, items: Sequence[Requeue]) -> list[int]:
        """Re-queue held tasks after a delay; delay 0 releases a task that never started."""
        if not items:
            return []
        k = QueueKeys(queue)
        args: list[Any] = [k.lease_prefix, k.inbox_prefix]
        for i in items:
            args += [i.id, i.token, i.priority, i.delay_ms]
        keys = [k.ready, k.delayed, k.active, k.idle]
        return [int(c) for c in await self._scripts.call("retry", keys, args)]

    @_translated
    async def reap(self, queue: str, limit: int) -> list[tuple[str, str]]:
        """Expired leases, removed from the active set, with the token each had."""
        k = QueueKeys(queue)
        flat = await self._scripts.call("reap", [k.active], [k.lease_prefix, limit])
        return [(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat), 2)]

    @_translated
    async def wait(self, waiter: Waiter, seconds: float) -> HandOff | None:
        """Block on the waiter's inbox for up to ``seconds``: the task handed to it, or None
        when the time ran out or the entry was a plain wake-up."""
        got = await self.client.blpop([waiter.inbox], timeout=max(seconds, 0.001))
        if got is None or not got[1]:
            return None
        task_id, score = str(got[1]).split(" ")
        return HandOff(task_id, waiter.token, 100 - int(float(score) // 1e13))

    @_translated
    async def retire(self, waiter: Waiter) -> bool:
        """End a registration (the worker stops): a hand-off still in the inbox goes back to
        the queue, and a BLPOP blocked on the inbox returns. True when one was put back."""
        k = QueueKeys(waiter.queue)
        args = [k.lease_prefix, k.inbox_prefix, waiter.member]
        return bool(await self._scripts.call("retire", [k.ready, k.active, k.idle], args))

    @_translated
    async def held_leases(self, queue: str, ids: Sequence[str]) -> list[str | None]:
        """The token of each id's lease, or None where no lease exists."""
        if not ids:
            return []
        k = QueueKeys(queue)
        found = await self.client.mget([k.lease(i) for i in ids])
        return [None if v is None else str(v) for v in found]

    @_translated
    async def depth(self, queue: str) -> QueueDepth:
        k = QueueKeys(queue)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(k.ready)
            pipe.zcard(k.delayed)
            pipe.zcard(k.active)
            ready, delayed, active = await pipe.execute()
        return QueueDepth(ready=int(ready), delayed=int(delayed), active=int(active))

    @_translated
    async def stats(self, queue: str) -> QueueStats:
        """Depth by state and oldest-ready age, read in one script by Redis' own clock."""
        k = QueueKeys(queue)
        ready, delayed, active, age_ms = await self._scripts.call(
            "stats", [k.ready, k.delayed, k.active], []
        )
        return QueueStats(int(ready), int(delayed), int(active), int(age_ms) / 1000)

    @_translated
    async def tracked(self, queue: str, task_id: str) -> str | None:
        """Which set holds ``task_id`` (ready, delayed, active), or None. For tests and tools."""
        k = QueueKeys(queue)
        for name in ("ready", "delayed", "active"):
            if await self.client.zscore(getattr(k, name), task_id) is not None:
                return name
        return None
