"""The notification outbox rows that the statements recording a task's end write, in the same
transaction: per the task's notify spec and per the configured defaults (DESIGN §5 Notify)."""

from __future__ import annotations

import uuid

from taskd.config.settings import NotifyRule
from taskd.store.dags import DagStore
from taskd.store.notifications import defaults_from_rules
from taskd.store.tasks import AttemptOutcome, RunDefaults, TaskStore
from tests.helpers import new_task
from tests.notify import finish, outbox

ERROR = {"type": "Boom", "message": "boom", "retryable": True}


def rows_of(rows: list[object]) -> set[tuple[str, str, str, int]]:
    return {
        (r["event_status"], r["channel"], r["target"], r["task_attempt"])  # type: ignore[index]
        for r in rows
    }


async def test_a_task_s_spec_writes_one_row_per_wanted_target(
    store: TaskStore, queue_name: str
) -> None:
    spec = {
        "on": ["FAILED"],
        "email": ["a@example.com", "b@example.com"],
        "webhook": "https://x.io/h",
    }
    await finish(store, queue_name, "t.ok", "SUCCESS", notify=spec)  # not wanted on SUCCESS
    assert await outbox(store) == []
    tid = await finish(store, queue_name, "t.ok", "FAILED", notify=spec, error=ERROR)
    rows = await outbox(store)
    assert {str(r["task_id"]) for r in rows} == {tid}
    assert rows_of(rows) == {
        ("FAILED", "email", "a@example.com", 1),
        ("FAILED", "email", "b@example.com", 1),
        ("FAILED", "webhook", "https://x.io/h", 1),
    }
    assert {r["state"] for r in rows} == {"pending"}


async def test_without_a_spec_or_defaults_nothing_is_written(
    store: TaskStore, queue_name: str
) -> None:
    await finish(store, queue_name, "t.ok", "SUCCESS")
    await finish(store, queue_name, "t.ok", "FAILED", error=ERROR)
    # a malformed spec (only the API validates them) must not break the recording
    await finish(store, queue_name, "t.ok", "SUCCESS", notify={"email": "not-a-list", "on": 3})
    assert await outbox(store) == []


async def test_configured_defaults_match_status_type_pattern_and_queue(
    store: TaskStore, queue_name: str
) -> None:
    store.notify_defaults = defaults_from_rules(
        [
            NotifyRule(
                statuses=("FAILED",), types=("billing.*", "a_b"), email=("ops@example.com",)
            ),
            NotifyRule(
                statuses=("SUCCESS",), queues=(queue_name,), webhook="https://hooks.example/x"
            ),
        ]
    )
    bill = await finish(store, queue_name, "billing.charge", "FAILED", error=ERROR)
    await finish(store, queue_name, "billing.charge", "SUCCESS")  # only the queue rule
    await finish(store, queue_name, "axb", "FAILED", error=ERROR)  # "_" is literal
    ab = await finish(store, queue_name, "a_b", "FAILED", error=ERROR)
    await finish(store, "other-queue", "x", "SUCCESS")  # neither
    # a spec and a default for the same target: one notification
    both = await finish(
        store, queue_name, "billing.x", "FAILED", error=ERROR, notify={"email": ["ops@example.com"]}
    )
    got = {(str(r["task_id"]), r["event_status"], r["channel"]) for r in await outbox(store)}
    succeeded = {str(r["task_id"]) for r in await outbox(store) if r["channel"] == "webhook"}
    assert len(succeeded) == 1
    assert got == {
        (bill, "FAILED", "email"),
        (ab, "FAILED", "email"),
        (both, "FAILED", "email"),
        (next(iter(succeeded)), "SUCCESS", "webhook"),
    }


async def test_a_stale_outcome_writes_no_notification(store: TaskStore, queue_name: str) -> None:
    tid = await finish(store, queue_name, "t.ok", "SUCCESS", notify={"email": ["a@example.com"]})
    written = await store.complete([AttemptOutcome(tid, 1, "FAILED", "ERROR", error=ERROR)])
    assert written.written == set()  # fenced: the task already ended
    assert [r["event_status"] for r in await outbox(store)] == ["SUCCESS"]


async def test_a_lost_last_attempt_fails_the_task_and_notifies(
    store: TaskStore, queue_name: str
) -> None:
    """The reaper's and the rescuer's path (lose_attempts)."""
    from dataclasses import replace

    task = replace(new_task(queue_name, "t.ok", max_retries=0), notify={"webhook": "https://x.io"})
    [row] = await store.insert([task])
    tid = str(row["id"])
    await store.flip_running([tid], ["tok-1"], "w1", RunDefaults([], [], [], 0, 300))
    result = await store.lose_attempts([(tid, "tok-1")], ERROR, 3)
    assert [status for _, status in result] == ["FAILED"]
    [note] = await outbox(store)
    assert (note["event_status"], note["channel"], note["task_attempt"]) == ("FAILED", "webhook", 1)


async def test_a_redriven_task_that_fails_again_notifies_again(
    store: TaskStore, queue_name: str
) -> None:
    tid = await finish(
        store, queue_name, "t.ok", "FAILED", error=ERROR, notify={"webhook": "https://x.io"}
    )
    assert await DagStore(store).redrive(uuid.UUID(tid), None) is not None
    await store.flip_running([tid], ["tok-2"], "w1", RunDefaults([], [], [], 0, 300))
    await store.complete([AttemptOutcome(tid, 2, "FAILED", "ERROR", error=ERROR)])
    assert sorted(r["task_attempt"] for r in await outbox(store)) == [1, 2]


async def test_log_lines_are_kept_with_the_attempt(store: TaskStore, queue_name: str) -> None:
    tid = await finish(store, queue_name, "t.ok", "SUCCESS", log=["one", "two"])
    [attempt] = await store.pool.fetch(
        "SELECT log FROM attempts WHERE task_id = $1", uuid.UUID(tid)
    )
    assert attempt["log"] == ["one", "two"]
