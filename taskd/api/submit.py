"""Turn validated submissions into stored, queued tasks (DESIGN §5, Submit)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from taskd import metrics
from taskd.api.errors import ApiError, problem, validation_error
from taskd.api.schemas import TaskSubmission
from taskd.config.settings import Settings
from taskd.errors import QueueUnavailable
from taskd.ids import uuid7
from taskd.queue.client import Enqueue, RedisQueue
from taskd.store.tasks import Executor, NewTask, TaskStore

log = logging.getLogger("taskd.api")

_canonical = msgspec.json.Encoder(order="deterministic")


@dataclass(frozen=True)
class Submitted:
    row: asyncpg.Record
    replayed: bool


def fingerprint(sub: TaskSubmission) -> str:
    """The idempotency fingerprint: the submission minus its key, with sorted object keys."""
    data = msgspec.structs.replace(sub, idempotency_key=None)
    return hashlib.sha256(_canonical.encode(data)).hexdigest()


class SubmitService:
    def __init__(self, store: TaskStore, queue: RedisQueue, settings: Settings) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings

    def prepare(
        self, sub: TaskSubmission, tenant: str, header_key: str | None, prefix: str = ""
    ) -> NewTask:
        """Check what the schema cannot, and build the row to insert."""
        problems = self._problems(sub, header_key, prefix)
        if problems:
            raise validation_error(problems)
        key = sub.idempotency_key or header_key
        backoff = msgspec.to_builtins(sub.backoff) if sub.backoff else None
        return NewTask(
            id=uuid7(),
            tenant=tenant,
            type=sub.type,
            queue=sub.queue,
            priority=sub.priority,
            payload=sub.payload,
            labels=sub.labels,
            max_retries=sub.max_retries,
            timeout=sub.timeout,
            backoff=backoff or None,
            run_at=sub.run_at,
            delay=sub.delay or 0.0,
            idempotency_key=key,
            request_hash=fingerprint(sub) if key else None,
            notify=msgspec.to_builtins(sub.notify) if sub.notify else None,
        )

    def _problems(
        self, sub: TaskSubmission, header_key: str | None, prefix: str
    ) -> list[dict[str, Any]]:
        p = prefix
        out = []
        if sub.delay is not None and sub.run_at is not None:
            out.append(problem(f"{p}delay", "delay and run_at are mutually exclusive"))
        if sub.run_at is not None and sub.run_at.tzinfo is None:
            out.append(problem(f"{p}run_at", "run_at needs a time zone offset (e.g. Z)"))
        limit = self.settings.api.max_payload_bytes
        if len(msgspec.json.encode(sub.payload)) > limit:
            out.append(problem(f"{p}payload", f"the payload is over the limit of {limit} bytes"))
        if sub.depends_on:
            out.append(problem(f"{p}depends_on", "task dependencies are not available yet"))
        if header_key and sub.idempotency_key and header_key != sub.idempotency_key:
            out.append(problem(f"{p}idempotency_key", "differs from the Idempotency-Key header"))
        if sub.notify is not None:
            out += _notify_problems(sub, p)
        return out

    async def submit_one(self, new: NewTask) -> Submitted:
        rows = await self.store.insert([new])
        if rows:
            await self._enqueue(rows)
            return Submitted(rows[0], replayed=False)
        return Submitted(await self._replay(new), replayed=True)

    async def _replay(self, new: NewTask, conn: Executor | None = None) -> asyncpg.Record:
        assert new.idempotency_key is not None  # only keyed inserts can conflict
        found = await self.store.find_idempotent(new.tenant, [new.idempotency_key], conn)
        if not found:  # the original was pruned between the two statements
            raise ApiError(409, "conflict", "the idempotency key was in use; retry the request")
        original = found[0]
        if original["request_hash"] != new.request_hash:
            raise ApiError(
                409,
                "idempotency_conflict",
                "this idempotency key was used with a different request body",
            )
        return original

    async def submit_batch(self, news: Sequence[NewTask]) -> list[asyncpg.Record]:
        """All or nothing; keyed items already stored with the same body are replayed."""
        result: list[asyncpg.Record] = []
        async with self.store.transaction() as conn:
            rows = await self.store.insert(news, conn)
            by_id = {r["id"]: r for r in rows}
            for i, new in enumerate(news):
                if new.id in by_id:
                    result.append(by_id[new.id])
                    continue
                try:
                    result.append(await self._replay(new, conn))
                except ApiError as e:  # leaving the block rolls the whole batch back
                    e.details = [problem(f"tasks[{i}].idempotency_key", e.message)]
                    raise
        await self._enqueue(rows)
        return result

    async def _enqueue(self, rows: Sequence[asyncpg.Record]) -> None:
        by_queue: dict[str, list[Enqueue]] = {}
        for r in rows:
            by_queue.setdefault(r["queue"], []).append(
                Enqueue(str(r["id"]), r["priority"], int(r["delay_ms"]))
            )
            metrics.TASKS_SUBMITTED.labels(r["queue"], r["type"]).inc()
        try:
            for queue, items in by_queue.items():
                await self.queue.enqueue(queue, items)
        except QueueUnavailable as e:
            # The rows are committed: the promoter's reconcile queues them when Redis is back.
            log.warning("accepted %d tasks while Redis is unreachable: %s", len(rows), e)


def _notify_problems(sub: TaskSubmission, p: str) -> list[dict[str, Any]]:
    assert sub.notify is not None
    out = []
    for i, addr in enumerate(sub.notify.email):
        if not _plausible_email(addr):
            out.append(problem(f"{p}notify.email[{i}]", "not an email address"))
    hook = sub.notify.webhook
    if hook is not None and not hook.startswith(("https://", "http://")):
        out.append(problem(f"{p}notify.webhook", "must be an http(s) URL"))
    return out


def _plausible_email(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    forbidden = set('\r\n<>,;" ')
    return bool(at and local and "." in domain and not (set(addr) & forbidden))
