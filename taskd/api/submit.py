"""Turn validated submissions into stored, queued tasks (DESIGN §5, Submit)."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from taskd import metrics
from taskd.api.coalesce import Coalescer
from taskd.api.errors import ApiError, problem, validation_error
from taskd.api.schemas import EARLIEST_TIME, LATEST_TIME, MAX_PAYLOAD_DEPTH, TaskSubmission
from taskd.config.settings import Settings
from taskd.errors import DatabaseUnavailable, QueueUnavailable, ScriptError
from taskd.ids import uuid7
from taskd.queue.client import RedisQueue, pending_entries
from taskd.store.tasks import Executor, NewTask, TaskStore

log = logging.getLogger("taskd.api")

_canonical = msgspec.json.Encoder(order="deterministic")
_NUL = "must not contain NUL characters (\\u0000)"


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
        # Concurrent single submissions share one INSERT and one enqueue (shared/PERF.md,
        # item 6): per-request statements capped one api process near 2,700 requests/s.
        self._coalescer: Coalescer[NewTask, Submitted] = Coalescer(self._store_many)

    def prepare(
        self,
        sub: TaskSubmission,
        tenant: str,
        header_key: str | None,
        prefix: str = "",
        *,
        dependencies: bool = True,
    ) -> NewTask:
        """Check what the schema cannot, and build the row to insert."""
        encoded = msgspec.json.encode(sub.payload)
        problems = self._problems(sub, header_key, prefix, encoded)
        if sub.depends_on and not dependencies:
            problems.append(
                problem(
                    f"{prefix}depends_on",
                    "not accepted in a batch: submit graphs with POST /v1/dags",
                )
            )
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
            # The bytes as sent: a JSON null payload stays JSON null (the store binds None
            # as SQL NULL), and nothing is decoded and encoded again.
            payload=msgspec.Raw(encoded),
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
        self, sub: TaskSubmission, header_key: str | None, prefix: str, encoded: bytes
    ) -> list[dict[str, Any]]:
        p = prefix
        out = _time_problems(sub, p)
        limit = self.settings.api.max_payload_bytes
        if len(encoded) > limit:
            out.append(problem(f"{p}payload", f"the payload is over the limit of {limit} bytes"))
        out += _text_problems(sub, p)
        if header_key and sub.idempotency_key and header_key != sub.idempotency_key:
            out.append(problem(f"{p}idempotency_key", "differs from the Idempotency-Key header"))
        if sub.notify is not None:
            out += _notify_problems(sub, p)
        return out

    @property
    def waiting(self) -> int:
        """Single submissions waiting to be stored (queued, or in a flush)."""
        return self._coalescer.waiting

    async def submit_one(self, new: NewTask) -> Submitted:
        done = await self._coalescer.submit(new)
        if not done.replayed:
            _log_submitted([done.row])  # here, in the request's context, so it carries its ids
        return done

    async def replay(self, new: NewTask, conn: Executor | None = None) -> asyncpg.Record:
        assert new.idempotency_key is not None  # only keyed inserts can conflict
        found = await self.store.find_idempotent(new.tenant, [new.idempotency_key], conn)
        return _original(new, found[0] if found else None)

    async def _store_many(self, news: Sequence[NewTask]) -> list[Submitted | BaseException]:
        """The coalescer's flush: one INSERT for all, replays for the keys already taken, one
        enqueue for what was stored. Each submission gets its own outcome.

        Raises DatabaseUnavailable when the INSERT failed for want of Postgres: the statement
        stored nothing, so every waiting request answers 503.
        """
        try:
            rows = await self.store.insert(_lock_order(news))
        except DatabaseUnavailable:
            raise
        except Exception:
            if len(news) == 1:
                raise
            # A row the database refused (a constraint, a deadlock) failed the whole statement,
            # which stored nothing: store each row alone, so only that row's request fails.
            log.info("a batch of %d submissions failed; storing them one by one", len(news))
            return [await self._store_alone(new) for new in news]
        stored = {r["id"]: r for r in rows}
        taken = [new for new in news if new.id not in stored]
        replays = await self._replays(taken) if taken else {}
        await self._enqueue(rows)
        return [
            Submitted(stored[new.id], replayed=False) if new.id in stored else replays[new.id]
            for new in news
        ]

    async def _store_alone(self, new: NewTask) -> Submitted | BaseException:
        try:
            return (await self._store_many([new]))[0]
        except Exception as e:
            return e

    async def _replays(self, news: Sequence[NewTask]) -> dict[uuid.UUID, Submitted | BaseException]:
        """Outcomes of submissions whose idempotency key was taken, by an earlier task or by
        another row of the same INSERT: 200 with the original, or 409."""
        by_tenant: dict[str, list[str]] = {}
        for new in news:
            assert new.idempotency_key is not None  # only keyed inserts can conflict
            by_tenant.setdefault(new.tenant, []).append(new.idempotency_key)
        found: dict[tuple[str, str], asyncpg.Record] = {}
        failed: dict[str, BaseException] = {}
        for tenant, keys in by_tenant.items():
            try:
                rows = await self.store.find_idempotent(tenant, keys)
            except DatabaseUnavailable as e:
                failed[tenant] = e
                continue
            found.update(((tenant, r["idempotency_key"]), r) for r in rows)
        out: dict[uuid.UUID, Submitted | BaseException] = {}
        for new in news:
            if new.tenant in failed:
                out[new.id] = failed[new.tenant]
                continue
            try:
                original = _original(new, found.get((new.tenant, new.idempotency_key or "")))
                out[new.id] = Submitted(original, replayed=True)
            except ApiError as e:
                out[new.id] = e
        return out

    async def submit_batch(self, news: Sequence[NewTask]) -> list[asyncpg.Record]:
        """All or nothing; keyed items already stored with the same body are replayed."""
        result: list[asyncpg.Record] = []
        async with self.store.transaction() as conn:
            rows = await self.store.insert(_lock_order(news), conn)
            by_id = {r["id"]: r for r in rows}
            for i, new in enumerate(news):
                if new.id in by_id:
                    result.append(by_id[new.id])
                    continue
                try:
                    result.append(await self.replay(new, conn))
                except ApiError as e:  # leaving the block rolls the whole batch back
                    e.details = [problem(f"tasks[{i}].idempotency_key", e.message)]
                    raise
        await self.enqueue_pending(rows)
        return result

    async def enqueue_pending(self, rows: Sequence[asyncpg.Record]) -> None:
        _log_submitted(rows)
        await self._enqueue(rows)

    async def _enqueue(self, rows: Sequence[asyncpg.Record]) -> None:
        """Count and queue freshly committed rows. They are accepted whatever Redis says: the
        promoter's reconcile queues committed PENDING rows that Redis lacks."""
        for (queue, type_), n in Counter((r["queue"], r["type"]) for r in rows).items():
            metrics.task_series(queue, type_).submitted.inc(n)
        try:
            await self.queue.enqueue_grouped(pending_entries(rows))
        except (QueueUnavailable, ScriptError) as e:
            # ScriptError too (a read-only replica after a failover, Redis out of memory): the
            # rows are committed, and API.md answers 201 once Postgres has committed.
            log.warning("accepted %d tasks that Redis did not queue: %s", len(rows), e)


def _log_submitted(rows: Iterable[asyncpg.Record]) -> None:
    if log.isEnabledFor(logging.DEBUG):  # joins the request's ids to the task's (taskd.logs)
        for r in rows:
            log.debug("task submitted", extra={"task_id": str(r["id"]), "type": r["type"]})


def _original(new: NewTask, original: asyncpg.Record | None) -> asyncpg.Record:
    """The task stored under ``new``'s idempotency key, if ``new`` is the same request."""
    if original is None:  # the original was pruned between the two statements
        raise ApiError(409, "conflict", "the idempotency key was in use; retry the request")
    if original["request_hash"] != new.request_hash:
        raise ApiError(
            409,
            "idempotency_conflict",
            "this idempotency key was used with a different request body",
        )
    return original


def _lock_order(news: Sequence[NewTask]) -> Sequence[NewTask]:
    """Keyed rows first, by (tenant, key). An INSERT locks each key it writes until it commits
    and waits on keys another uncommitted INSERT holds: two multi-row inserts taking the same
    keys in opposite orders would deadlock. In one order they only queue behind each other."""
    if all(new.idempotency_key is None for new in news):
        return news
    return sorted(
        news, key=lambda n: (n.idempotency_key is None, n.tenant, n.idempotency_key or "")
    )


def _time_problems(sub: TaskSubmission, p: str) -> list[dict[str, Any]]:
    out = []
    if sub.delay is not None and sub.run_at is not None:
        out.append(problem(f"{p}delay", "delay and run_at are mutually exclusive"))
    run_at = sub.run_at
    if run_at is not None and run_at.tzinfo is None:
        out.append(problem(f"{p}run_at", "run_at needs a time zone offset (e.g. Z)"))
    elif run_at is not None and not EARLIEST_TIME <= run_at <= LATEST_TIME:
        out.append(problem(f"{p}run_at", "must be from 1970-01-01 to 9999-12-31 (UTC)"))
    return out


def _text_problems(sub: TaskSubmission, p: str) -> list[dict[str, Any]]:
    """Text the schema lets through but storage must not get: NUL (Postgres refuses it in text
    and jsonb), over-deep payloads, and names with a trailing newline."""
    # Python's "$" also matches before a final newline, so the schema patterns let one through.
    out = [
        problem(f"{p}{name}", "must not end with a newline")
        for name, value in (("type", sub.type), ("queue", sub.queue))
        if value.endswith("\n")
    ]
    depth, nul = _scan(sub.payload)
    if nul:
        out.append(problem(f"{p}payload", _NUL))
    if depth > MAX_PAYLOAD_DEPTH:
        out.append(problem(f"{p}payload", f"nested deeper than {MAX_PAYLOAD_DEPTH} levels"))
    if any("\x00" in k or "\x00" in v for k, v in sub.labels.items()):
        out.append(problem(f"{p}labels", _NUL))
    if sub.idempotency_key is not None and "\x00" in sub.idempotency_key:
        out.append(problem(f"{p}idempotency_key", _NUL))
    return out


def _scan(value: Any) -> tuple[int, bool]:
    """The nesting depth of a decoded JSON value, and whether any string or key holds NUL."""
    depth, nul = 0, False
    stack = [(value, 1)]
    while stack:  # iterative: the value may be nested as deep as msgspec allowed
        item, level = stack.pop()
        if isinstance(item, str):
            nul = nul or "\x00" in item
        elif isinstance(item, dict):
            depth = max(depth, level)
            nul = nul or any("\x00" in k for k in item)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            depth = max(depth, level)
            stack.extend((v, level + 1) for v in item)
    return depth, nul


def _notify_problems(sub: TaskSubmission, p: str) -> list[dict[str, Any]]:
    assert sub.notify is not None
    out = []
    for i, addr in enumerate(sub.notify.email):
        if not _plausible_email(addr):
            out.append(problem(f"{p}notify.email[{i}]", "not an email address"))
    hook = sub.notify.webhook
    if hook is not None and (not hook.startswith(("https://", "http://")) or "\x00" in hook):
        out.append(problem(f"{p}notify.webhook", "must be an http(s) URL"))
    return out


def _plausible_email(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    forbidden = set('\r\n<>,;" \x00')
    return bool(at and local and "." in domain and not (set(addr) & forbidden))
