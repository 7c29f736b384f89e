"""Notifications end to end against a real SMTP server and a real HTTP receiver: what arrives,
that it is signed, retried with backoff, marked dead after the limit, and never sent to a
private destination unless the configuration allows it (DESIGN §5 Notify, API.md)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskd import NonRetryableError, TaskContext, metrics
from taskd.config.settings import NotifySettings, Settings, SmtpSettings, WebhookSettings
from taskd.queue.client import RedisQueue
from taskd.services.notifier import Notifier
from taskd.store.notifications import NotifyStore
from taskd.store.tasks import TaskStore
from tests.helpers import eventually, new_task, registry_of, running_worker, submit, wait_terminal
from tests.notify import (
    SECRET,
    Receiver,
    SmtpSink,
    delivery_attempts,
    finish,
    outbox,
    parse_time,
)


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    s = SmtpSink().start()
    yield s
    s.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def notify_settings(
    sink: SmtpSink, allow: tuple[str, ...] = ("127.0.0.1/32",), **kw: Any
) -> NotifySettings:
    options: dict[str, Any] = {
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "max_attempts": 5,
        "poll_interval_seconds": 0.5,
        **kw,
    }
    return NotifySettings(
        smtp=SmtpSettings(host="127.0.0.1", port=sink.port, sender="taskd@example.com"),
        webhook=WebhookSettings(secret=SECRET, allow=allow, timeout_seconds=5),
        **options,
    )


@contextlib.asynccontextmanager
async def notifier_of(
    store: TaskStore, settings: Settings, ns: NotifySettings
) -> AsyncIterator[Notifier]:
    n = Notifier(NotifyStore(store.pool), ns, settings.retry)
    try:
        yield n
    finally:
        await n.close()


@contextlib.asynccontextmanager
async def serving(notifier: Notifier) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.serve(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def drain(notifier: Notifier) -> int:
    total = 0
    while n := await notifier.run_once():
        total += n
    return total


def counter(channel: str, outcome: str) -> float:
    return metrics.NOTIFICATIONS.labels(channel, outcome)._value.get()


async def ok(ctx: TaskContext, payload: Any) -> dict[str, int]:
    ctx.log("step 1: fetched")
    ctx.log("step 2: stored\nstep 3: done")
    return {"n": 1}


async def boom(ctx: TaskContext, payload: Any) -> None:
    ctx.log("about to fail")
    raise NonRetryableError("the upstream said no")


async def test_success_and_failure_send_the_documented_email_and_a_signed_webhook(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    sink: SmtpSink,
    receiver: Receiver,
) -> None:
    spec = {"on": ["SUCCESS", "FAILED"], "email": ["ops@example.com"], "webhook": receiver.url}
    good = new_task(queue_name, "report.build")
    bad = new_task(queue_name, "report.fail", max_retries=0)
    from dataclasses import replace

    good, bad = replace(good, notify=spec, labels={"team": "data"}), replace(bad, notify=spec)
    ok_id, bad_id = await submit(store, queue, good, bad)
    registry = registry_of(report__build=ok, report__fail=boom)
    async with running_worker(settings, store, queue, registry):
        assert (await wait_terminal(store, ok_id))["status"] == "SUCCESS"
        assert (await wait_terminal(store, bad_id))["status"] == "FAILED"
    delivered_before = counter("email", "delivered") + counter("webhook", "delivered")
    async with notifier_of(store, settings, notify_settings(sink)) as notifier:
        assert await drain(notifier) == 4
        assert await notifier.run_once() == 0  # delivered rows are not sent again
    assert counter("email", "delivered") + counter("webhook", "delivered") == delivered_before + 4
    assert metrics.NOTIFY_BACKLOG._value.get() == 0

    mails = {m.message["Subject"]: m for m in sink.mails}
    assert set(mails) == {
        f"[taskd] report.build SUCCESS ({ok_id})",
        f"[taskd] report.fail FAILED ({bad_id})",
    }
    good_mail = mails[f"[taskd] report.build SUCCESS ({ok_id})"]
    assert good_mail.recipients == ["ops@example.com"]
    assert good_mail.message["From"] == "taskd@example.com"
    text = good_mail.message.get_content()
    for line in (
        f"id:        {ok_id}",
        "type:      report.build",
        "status:    SUCCESS",
        "attempts:  1",
        "labels:    team=data",
        "step 1: fetched",
        "step 3: done",
    ):
        assert line in text, text
    for name in ("created:", "started:", "finished:", "duration:"):
        assert name in text
    bad_text = mails[f"[taskd] report.fail FAILED ({bad_id})"].message.get_content()
    assert "NonRetryableError: the upstream said no" in bad_text
    assert "about to fail" in bad_text

    assert len(receiver.hooks) == 2 and all(h.verifies() for h in receiver.hooks)
    docs = {h.doc["task"]["id"]: h for h in receiver.hooks}
    assert docs[ok_id].doc["event"] == "task.succeeded"
    assert docs[bad_id].doc["event"] == "task.failed"
    task = docs[bad_id].doc["task"]
    assert (task["status"], task["attempts"], task["type"]) == ("FAILED", 1, "report.fail")
    assert task["error"]["message"] == "the upstream said no"
    assert docs[ok_id].doc["task"]["result"] == {"n": 1}
    rows = {str(r["task_id"]) + r["channel"]: r for r in await outbox(store)}
    hook = docs[ok_id]
    assert hook.headers["webhook-id"] == f"msg_{rows[ok_id + 'webhook']['message_id'].hex}"
    assert hook.headers["Content-Type"] == "application/json"
    assert all(r["state"] == "delivered" and r["attempts"] == 1 for r in rows.values())
    for r in rows.values():
        [attempt] = await delivery_attempts(store, r["id"])
        assert attempt["outcome"] == "delivered"


async def test_a_receiver_failing_three_times_gets_it_on_the_fourth_try_with_backoff(
    settings: Settings, store: TaskStore, queue_name: str, sink: SmtpSink, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503, 500]
    tid = await finish(store, queue_name, "t.ok", "SUCCESS", notify={"webhook": receiver.url})
    async with notifier_of(store, settings, notify_settings(sink)) as notifier, serving(notifier):
        hooks = await receiver.wait_for(4)

        async def delivered() -> bool:
            return (await outbox(store))[0]["state"] == "delivered"

        await eventually(delivered)
    assert len(hooks) == 4 and all(h.verifies() for h in hooks)
    assert len({h.headers["webhook-id"] for h in hooks}) == 1  # the same message each time
    assert {h.doc["task"]["id"] for h in hooks} == {tid}
    assert len({h.body for h in hooks}) == 1  # rendered once, sent identically
    [row] = await outbox(store)
    attempts = await delivery_attempts(store, row["id"])
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "failed", "delivered"]
    assert all(a["started_at"] <= a["finished_at"] for a in attempts)
    assert "HTTP 500" in attempts[0]["detail"] and "HTTP 503" in attempts[1]["detail"]
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(hooks)]
    for gap, backoff in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        # min(max, base * 2^(n-1)) between tries; 10 ms for the database and local clocks
        assert gap >= backoff - 0.01, gaps


async def test_a_receiver_that_is_down_gets_it_once_it_is_up(
    settings: Settings, store: TaskStore, queue_name: str, sink: SmtpSink
) -> None:
    later = Receiver()  # nothing listens on its port yet
    await finish(store, queue_name, "t.ok", "FAILED", notify={"webhook": later.url})
    async with notifier_of(store, settings, notify_settings(sink)) as notifier, serving(notifier):

        async def failed_twice() -> bool:
            row = (await outbox(store))[0]
            return len(await delivery_attempts(store, row["id"])) >= 2

        await eventually(failed_twice)
        await later.start()
        try:
            [hook] = await later.wait_for(1)
            assert hook.verifies() and hook.doc["event"] == "task.failed"

            async def delivered() -> bool:
                return (await outbox(store))[0]["state"] == "delivered"

            await eventually(delivered)
        finally:
            await later.stop()
    row = (await outbox(store))[0]
    attempts = await delivery_attempts(store, row["id"])
    assert attempts[-1]["outcome"] == "delivered"
    assert all(a["outcome"] == "failed" for a in attempts[:-1])
    assert "Connect" in attempts[0]["detail"] or "refused" in attempts[0]["detail"].lower()


async def test_after_the_limit_a_notification_is_dead_and_counted(
    settings: Settings, store: TaskStore, queue_name: str, sink: SmtpSink, receiver: Receiver
) -> None:
    receiver.statuses = [500] * 10
    await finish(store, queue_name, "t.ok", "SUCCESS", notify={"webhook": receiver.url})
    abandoned = counter("webhook", "abandoned")
    ns = notify_settings(sink, max_attempts=3)
    async with notifier_of(store, settings, ns) as notifier, serving(notifier):

        async def dead() -> bool:
            return (await outbox(store))[0]["state"] == "dead"

        await eventually(dead)
    assert len(receiver.hooks) == 3
    [row] = await outbox(store)
    assert row["attempts"] == 3 and "HTTP 500" in row["last_error"]
    outcomes = [a["outcome"] for a in await delivery_attempts(store, row["id"])]
    assert outcomes == ["failed", "failed", "abandoned"]
    assert counter("webhook", "abandoned") == abandoned + 1
    assert metrics.NOTIFY_BACKLOG._value.get() == 0


async def test_a_new_row_wakes_the_notifier_through_listen_notify(
    settings: Settings, store: TaskStore, queue_name: str, sink: SmtpSink
) -> None:
    ns = notify_settings(sink, poll_interval_seconds=60)  # a poll would come far too late
    async with notifier_of(store, settings, ns) as notifier, serving(notifier):
        await eventually(lambda: _listening(store))
        await finish(store, queue_name, "t.ok", "SUCCESS", notify={"email": ["a@example.com"]})
        await sink.wait_for(1, timeout=5)


async def _listening(store: TaskStore) -> bool:
    n = await store.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE 'LISTEN%'"
    )
    return int(n) > 0


async def test_loopback_and_metadata_destinations_are_refused_by_default(
    settings: Settings, store: TaskStore, queue_name: str, sink: SmtpSink, receiver: Receiver
) -> None:
    # 169.254.169.254 is refused before any connection is attempted (nothing is sent there).
    targets = [
        receiver.url,
        f"http://localhost:{receiver.port}/hook",
        "http://169.254.169.254/x",
        f"http://[::ffff:127.0.0.1]:{receiver.port}/hook",
    ]
    for url in targets:
        await finish(store, queue_name, "t.ok", "SUCCESS", notify={"webhook": url})
    abandoned = counter("webhook", "abandoned")
    async with notifier_of(store, settings, notify_settings(sink, allow=())) as notifier:
        assert await drain(notifier) == len(targets)
    assert receiver.hooks == []
    rows = await outbox(store)
    assert [r["state"] for r in rows] == ["dead"] * len(targets)  # at once: retrying cannot help
    for r in rows:
        assert "not a permitted destination" in r["last_error"], r["last_error"]
        assert r["attempts"] == 1
    assert counter("webhook", "abandoned") == abandoned + len(targets)


async def test_header_injection_through_task_fields_adds_no_header_and_no_recipient(
    settings: Settings, store: TaskStore, queue_name: str, sink: SmtpSink
) -> None:
    evil = "\r\nBcc: victim@example.net\r\nX-Evil: 1"
    tid = await finish(
        store,
        queue_name,
        "t.ok" + evil,
        "FAILED",
        notify={
            "email": ["ops@example.com", "ops2@example.com" + evil, "x@example.com\nBcc: y@z.io"]
        },
        labels={"k" + evil: "v" + evil},
        error={
            "type": "Boom" + evil,
            "message": "failed" + evil + "\r\n\r\nforged body",
            "retryable": False,
        },
        log=["line" + evil],
    )
    async with notifier_of(store, settings, notify_settings(sink)) as notifier:
        assert await drain(notifier) == 3
    [mail] = sink.mails
    assert mail.recipients == ["ops@example.com"]
    msg = mail.message
    assert sorted(k.lower() for k in msg) == sorted(
        [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "auto-submitted",
            "content-type",
            "content-transfer-encoding",
            "mime-version",
        ]
    )
    assert msg["To"] == "ops@example.com"
    assert msg["Subject"] == f"[taskd] t.ok Bcc: victim@example.net X-Evil: 1 FAILED ({tid})"
    assert b"\nBcc:" not in mail.data.split(b"\r\n\r\n", 1)[0]
    rows = {r["target"]: r for r in await outbox(store)}
    assert rows["ops@example.com"]["state"] == "delivered"
    for target in ("ops2@example.com" + evil, "x@example.com\nBcc: y@z.io"):
        assert rows[target]["state"] == "dead"
        assert "not an email address" in rows[target]["last_error"]


async def test_http_request_and_email_send_are_built_in_task_types(
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    sink: SmtpSink,
    receiver: Receiver,
) -> None:
    from taskd.builtin_handlers import Builtins, with_builtins
    from taskd.registry import Registry

    builtins = Builtins(notify_settings(sink))
    refused = Builtins(notify_settings(sink, allow=()))
    tasks = [
        new_task(
            queue_name,
            "email.send",
            payload={"to": ["a@example.com"], "subject": "hi\r\nBcc: x@y.io", "text": "hello"},
        ),
        new_task(
            queue_name,
            "http.request",
            payload={"url": receiver.url, "method": "POST", "json": {"a": 1}},
        ),
    ]
    ids = await submit(store, queue, *tasks)
    try:
        async with running_worker(settings, store, queue, with_builtins(Registry(), builtins)):
            rows = [await wait_terminal(store, i) for i in ids]
        assert [r["status"] for r in rows] == ["SUCCESS", "SUCCESS"]
        [mail] = sink.mails
        assert mail.recipients == ["a@example.com"] and mail.message["Subject"] == "hi Bcc: x@y.io"
        assert mail.message.get_content().strip() == "hello"
        [hook] = receiver.hooks
        assert hook.body == b'{"a":1}' and rows[1]["result"]["status"] == 200
        # the same destination policy: loopback refused by default, and not retried
        [tid] = await submit(
            store, queue, new_task(queue_name, "http.request", payload={"url": receiver.url})
        )
        async with running_worker(settings, store, queue, with_builtins(Registry(), refused)):
            row = await wait_terminal(store, tid)
        assert row["status"] == "FAILED" and row["attempt"] == 1
        assert "not a permitted destination" in row["error"]["message"]
        assert len(receiver.hooks) == 1
    finally:
        await builtins.close()
        await refused.close()


async def test_notifications_keep_the_task_s_own_times(
    settings: Settings, store: TaskStore, queue_name: str, sink: SmtpSink, receiver: Receiver
) -> None:
    tid = await finish(store, queue_name, "t.ok", "SUCCESS", notify={"webhook": receiver.url})
    async with notifier_of(store, settings, notify_settings(sink)) as notifier:
        await drain(notifier)
    [hook] = receiver.hooks
    row = await store.get(uuid.UUID(tid), None)
    assert row is not None
    assert parse_time(hook.doc["task"]["finished_at"]) == row["finished_at"].replace(
        microsecond=row["finished_at"].microsecond // 1000 * 1000
    )
