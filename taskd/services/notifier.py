"""Deliver the notification outbox: email and signed webhooks (DESIGN §5 Notify, §6).

Rows are claimed with ``FOR UPDATE SKIP LOCKED`` in a transaction that lasts while the batch is
delivered (concurrently, each delivery under its own deadline) and settled: a notifier that dies
mid-delivery rolls back, its rows become claimable again and are delivered again —
at-least-once, with the same ``webhook-id`` / ``Message-ID`` so a receiver can drop a duplicate.
Each delivery attempt is recorded; a failure is retried with backoff until
``notify.max_attempts``, then the row is marked dead and counted as abandoned. The loop wakes on
``LISTEN taskd_notify`` (a trigger notifies on every new row) and otherwise polls, sleeping until
the next retry is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from taskd import metrics
from taskd.api.representation import task_view
from taskd.config.settings import NotifySettings, RetrySettings
from taskd.errors import DeliveryFailed, DependencyUnavailable
from taskd.notify import render, signing
from taskd.notify.email import EmailChannel
from taskd.notify.webhook import DestinationPolicy, HttpClient, WebhookChannel
from taskd.store.notifications import NotifyClaim, NotifyStore, Settled

log = logging.getLogger("taskd.notifier")
_encoder = msgspec.json.Encoder()
MAX_PAUSE = 30.0


class WebhookDoc(msgspec.Struct):
    event: str
    task: Any


class EmailDoc(msgspec.Struct):
    subject: str
    body: str


def task_facts(row: asyncpg.Record, history: list[asyncpg.Record]) -> render.TaskFacts:
    """What the email says, from the claimed row (task columns) and the task's attempts."""
    error = row["error"] or {}
    last = [h for h in history if h["attempt"] == row["n_task_attempt"]]
    lines = list(last[0]["log"] or []) if last else []
    return render.TaskFacts(
        id=str(row["id"]),
        type=row["type"],
        queue=row["queue"],
        status=row["n_event"],
        attempts=row["attempt"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error_type=error.get("type") if row["n_event"] != "SUCCESS" else None,
        error_message=error.get("message") if row["n_event"] != "SUCCESS" else None,
        labels=row["labels"] or {},
        log_lines=[str(x) for x in lines],
    )


class Notifier:
    """``run_once`` delivers one batch (tests call it); ``serve`` runs until ``stop``.

    ``settings`` may be replaced whole at any time (a reloaded configuration): every pass reads
    it afresh.
    """

    def __init__(
        self,
        store: NotifyStore,
        settings: NotifySettings,
        retry: RetrySettings,
        *,
        http: HttpClient | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.retry = retry
        self.http = http or HttpClient(DestinationPolicy(settings.webhook.allow))
        self._policy_allow = settings.webhook.allow

    async def close(self) -> None:
        await self.http.close()

    async def run_once(self) -> int:
        """Deliver one batch of due rows; returns how many delivery attempts were made."""
        s = self.settings
        if s.webhook.allow != self._policy_allow:
            self.http.policy = DestinationPolicy(s.webhook.allow)
            self._policy_allow = s.webhook.allow
        async with self.store.claim(s.batch_size) as claim:
            results = list(
                await asyncio.gather(*(self._deliver(claim, row, s) for row in claim.rows))
            )
            if results:
                await claim.settle(results, s.retry_base_seconds, s.retry_max_seconds)
        # Counted once committed: a notifier that dies before the commit counts nothing.
        channels = {r["n_id"]: r["n_channel"] for r in claim.rows}
        for (channel, outcome), n in Counter(
            (channels[r.outbox_id], r.outcome) for r in results
        ).items():
            metrics.NOTIFICATIONS.labels(channel, outcome).inc(n)
        metrics.NOTIFY_BACKLOG.set(await self.store.backlog())
        return len(results)

    async def _deliver(self, claim: NotifyClaim, row: asyncpg.Record, s: NotifySettings) -> Settled:
        started = datetime.now(UTC)
        content: str | None = row["n_content"]
        try:
            if content is None:
                content = self._render(row, claim.attempts.get(str(row["id"]), []), s)
            if row["n_channel"] == "email":
                await self._email(row, content, s)
            else:
                await self._webhook(row, content, s)
        except DeliveryFailed as e:
            last = e.permanent or row["n_attempts"] + 1 >= s.max_attempts
            outcome = "abandoned" if last else "failed"
            (log.warning if last else log.info)(
                "notification %s (%s to %s) %s: %s",
                row["n_id"],
                row["n_channel"],
                row["n_target"],
                "abandoned" if last else "failed, will retry",
                e,
                extra={"task_id": str(row["id"])},
            )
            return Settled(row["n_id"], outcome, str(e), content, started)
        except Exception as e:  # a bug must not block the rest of the batch: retried, counted
            log.exception("notification %s could not be delivered", row["n_id"])
            last = row["n_attempts"] + 1 >= s.max_attempts
            detail = f"internal error: {type(e).__name__}: {e}"
            return Settled(row["n_id"], "abandoned" if last else "failed", detail, content, started)
        return Settled(row["n_id"], "delivered", None, content, started)

    def _render(self, row: asyncpg.Record, history: list[Any], s: NotifySettings) -> str:
        if row["n_channel"] == "email":
            facts = task_facts(row, history)
            subject = render.subject(facts.type, facts.status, facts.id)
            body = render.email_body(facts, s.log_lines)
            return _encoder.encode(EmailDoc(subject, body)).decode()
        r = self.retry
        view = task_view(
            dict(row), default_max_retries=r.max_retries, default_timeout=r.timeout, history=history
        )
        return _encoder.encode(WebhookDoc(render.event_name(row["n_event"]), view)).decode()

    async def _email(self, row: asyncpg.Record, content: str, s: NotifySettings) -> None:
        doc = msgspec.json.decode(content, type=EmailDoc)
        to = render.validate_address(row["n_target"])
        message = render.build_email(
            sender=s.smtp.sender,
            to=[to],
            subject_line=doc.subject,
            body=doc.body,
            message_id=str(row["n_message_id"]),
            date=datetime.now(UTC),
        )
        await EmailChannel(s.smtp).send(message, [to])

    async def _webhook(self, row: asyncpg.Record, content: str, s: NotifySettings) -> None:
        await WebhookChannel(self.http).post(
            row["n_target"],
            f"msg_{row['n_message_id'].hex}",
            content.encode(),
            key=signing.secret_key(s.webhook.secret),
            time_limit=s.webhook.timeout_seconds,
        )

    async def serve(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set: woken by LISTEN/NOTIFY, else by the poll interval or
        the next due retry, whichever comes first."""
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(wake))
        try:
            await self._loop(wake, stop)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _loop(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        pause, down = 0.0, False
        while not stop.is_set():
            wake.clear()
            try:
                wait = await self._pass()
            except DependencyUnavailable as e:
                if not down:
                    log.warning("notifier: %s; retrying with backoff", e)
                down, pause = True, min(max(pause * 2, 0.1), MAX_PAUSE)
                wait = pause
            except Exception:
                log.exception("notifier pass failed; retrying")
                pause = min(max(pause * 2, 0.1), MAX_PAUSE)
                wait = pause
            else:
                if down:
                    log.warning("notifier: recovered")
                down, pause = False, 0.0
            if wait > 0:
                await _first(wake, stop, wait)

    async def _pass(self) -> float:
        """One batch; returns how long to wait before the next (0: go on at once)."""
        s = self.settings
        n = await self.run_once()
        if n >= s.batch_size:
            return 0.0
        due = await self.store.next_due()
        if due is None:
            return s.poll_interval_seconds
        if due > 0:
            return min(due, s.poll_interval_seconds)
        # Due rows this pass did not get are locked by another notifier: look again shortly.
        return 0.0 if n else min(s.poll_interval_seconds, 0.5)

    async def _listen(self, wake: asyncio.Event) -> None:
        """Keep a LISTEN connection; while it is down the poll interval still delivers."""
        delay = 0.5
        while True:
            lost = asyncio.Event()
            try:
                async with self.store.listening(wake.set, lost.set):
                    wake.set()  # rows written while we were not listening
                    delay = 0.5
                    await lost.wait()
                log.warning("notifier: LISTEN connection lost; polling until it is back")
            except DependencyUnavailable:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_PAUSE)


async def _first(wake: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    """Wait until ``wake`` or ``stop`` is set, or ``seconds`` pass."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
