"""A notifier killed with -9 mid-delivery loses no notification (DESIGN §6): its claimed rows
roll back, another notifier delivers them — at-least-once, with the same webhook-id and
Message-ID, so the in-flight ones arrive twice and every other one at least once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from taskd.store.tasks import TaskStore
from tests.conftest import REDIS_URL
from tests.fault.harness import Taskd, processes, role_env
from tests.helpers import eventually
from tests.notify import SECRET, Receiver, SmtpSink, finish, outbox

TASKS = 12


async def test_a_notifier_killed_mid_delivery_loses_nothing(
    database: str, fstore: TaskStore, exec_log: Path, queue_name: str
) -> None:
    sink = SmtpSink().start()
    receiver = await Receiver(hold=True).start()  # requests hang until released
    try:
        spec = {"email": ["ops@example.com"], "webhook": receiver.url}
        ids = [
            await finish(fstore, queue_name, "t.ok", "SUCCESS", notify=spec) for _ in range(TASKS)
        ]
        env = role_env(
            database,
            REDIS_URL,
            queue_name,
            exec_log,
            NOTIFY__SMTP__PORT=str(sink.port),
            NOTIFY__SMTP__SENDER="taskd@example.com",
            NOTIFY__WEBHOOK__SECRET=SECRET,
            NOTIFY__WEBHOOK__ALLOW="[127.0.0.1/32]",
            NOTIFY__WEBHOOK__TIMEOUT_SECONDS="30",
            NOTIFY__BATCH_SIZE="10",
            NOTIFY__RETRY_BASE_SECONDS="0.05",
            NOTIFY__RETRY_MAX_SECONDS="0.2",
            NOTIFY__POLL_INTERVAL_SECONDS="0.5",
        )
        with processes() as procs:
            first = Taskd(["notifier"], env, "notifier1").start()
            procs.append(first)
            in_flight = await receiver.wait_for(1, timeout=20)  # a delivery is under way
            first.kill()
            assert all(r["state"] == "pending" for r in await outbox(fstore))  # rolled back
            held = {h.headers["webhook-id"] for h in in_flight}
            receiver.release()
            procs.append(Taskd(["notifier"], env, "notifier2").start())

            async def settled() -> bool:
                return all(r["state"] != "pending" for r in await outbox(fstore))

            await eventually(settled, timeout=30, interval=0.05)
        rows = await outbox(fstore)
        assert len(rows) == 2 * TASKS and {r["state"] for r in rows} == {"delivered"}
        hook_ids = Counter(h.headers["webhook-id"] for h in receiver.hooks)
        expected = {f"msg_{r['message_id'].hex}" for r in rows if r["channel"] == "webhook"}
        assert set(hook_ids) == expected  # every webhook arrived...
        assert all(hook_ids[m] >= 2 for m in held)  # ...the in-flight ones again after the kill
        assert all(h.verifies() for h in receiver.hooks)
        mail_ids = {str(m.message["Message-ID"]) for m in sink.mails}
        expected_mail = {
            f"<{r['message_id']}@example.com>" for r in rows if r["channel"] == "email"
        }
        assert mail_ids == expected_mail
        assert {m.message["Subject"].split("(")[1].rstrip(")") for m in sink.mails} == set(ids)
    finally:
        await receiver.stop()
        sink.stop()
