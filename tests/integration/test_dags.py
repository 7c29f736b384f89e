"""DAGs end to end: the API stores graphs, workers release children, failures cascade."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from taskd import NonRetryableError, TaskContext
from taskd.config.settings import Settings
from taskd.queue.client import RedisQueue
from taskd.store.tasks import AttemptOutcome, RunDefaults, TaskStore
from tests.conftest import bearer
from tests.helpers import eventually, registry_of, running_worker, wait_terminal

DEFAULTS = RunDefaults([], [], [], 3, 300.0)


def node(key: str, type_: str, queue: str, *deps: str, **fields: Any) -> dict[str, Any]:
    return {"key": key, "type": type_, "queue": queue, "depends_on": list(deps), **fields}


async def post_dag(api: TestClient[Any, Any], tasks: list[dict[str, Any]], **kw: Any) -> Any:
    resp = await api.post("/v1/dags", json={"name": "test", "tasks": tasks}, headers=bearer(**kw))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_fan_out_runs_children_after_the_parent_and_in_parallel(
    api: TestClient[Any, Any],
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
) -> None:
    events: list[tuple[str, str]] = []
    both_started = asyncio.Event()
    running: set[str] = set()

    async def step(ctx: TaskContext, payload: Any) -> str:
        name = payload["name"]
        events.append(("start", name))
        if name != "A":
            running.add(name)
            if running >= {"B", "C"}:
                both_started.set()
            await asyncio.wait_for(both_started.wait(), 10)  # B and C overlap, or this times out
        events.append(("end", name))
        return f"{name} done"

    dag = await post_dag(
        api,
        [
            node("A", "t.step", queue_name, payload={"name": "A"}),
            node("B", "t.step", queue_name, "A", payload={"name": "B"}),
            node("C", "t.step", queue_name, "A", payload={"name": "C"}),
        ],
    )
    assert dag["status"] == "RUNNING"
    assert {k: t["status"] for k, t in dag["tasks"].items()} == {
        "A": "PENDING",
        "B": "WAITING",
        "C": "WAITING",
    }
    async with running_worker(settings, store, queue, registry_of(t__step=step)):
        for t in dag["tasks"].values():
            assert (await wait_terminal(store, t["id"]))["status"] == "SUCCESS"
    assert events[:2] == [("start", "A"), ("end", "A")]
    assert {e for e in events[2:4]} == {("start", "B"), ("start", "C")}
    got = await (await api.get(f"/v1/dags/{dag['id']}", headers=bearer())).json()
    assert got["status"] == "SUCCESS"
    assert sorted((e["from"], e["to"]) for e in got["edges"]) == [("A", "B"), ("A", "C")]
    assert got["tasks"]["B"]["depends_on"] == [dag["tasks"]["A"]["id"]]


async def test_diamond_releases_the_join_once_with_parent_results(
    api: TestClient[Any, Any],
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
) -> None:
    seen: dict[str, Any] = {}

    async def step(ctx: TaskContext, payload: Any) -> Any:
        if payload.get("join"):
            seen.update(ctx.parent_results)
        return payload.get("value")

    dag = await post_dag(
        api,
        [
            node("A", "t.step", queue_name, payload={"value": 1}),
            node("B", "t.step", queue_name, "A", payload={"value": [2]}),
            node("C", "t.step", queue_name, "A", payload={"value": {"c": 3}}),
            node("D", "t.step", queue_name, "B", "C", payload={"join": True}),
        ],
    )
    async with running_worker(settings, store, queue, registry_of(t__step=step)):
        row = await wait_terminal(store, dag["tasks"]["D"]["id"])
    assert (row["status"], row["attempt"], row["unmet"]) == ("SUCCESS", 1, 0)
    assert seen == {"B": [2], "C": {"c": 3}}


async def test_two_parents_finishing_at_once_release_the_child_once(
    store: TaskStore, queue: RedisQueue, api: TestClient[Any, Any], queue_name: str
) -> None:
    for _ in range(10):
        dag = await post_dag(
            api,
            [
                node("B", "t.x", queue_name),
                node("C", "t.x", queue_name),
                node("D", "t.x", queue_name, "B", "C"),
            ],
        )
        b, c = dag["tasks"]["B"]["id"], dag["tasks"]["C"]["id"]
        leased = await queue.lease(queue_name, 2, f"w:{uuid.uuid4().hex}", 60_000)
        flipped = await store.flip_running(leased.ids, leased.tokens, "w", DEFAULTS)
        assert {t.id for t in flipped} == {b, c}
        done = await asyncio.gather(
            *(store.complete([AttemptOutcome(t.id, 1, "SUCCESS", "SUCCESS")]) for t in flipped)
        )
        released = [r.id for d in done for r in d.released]
        assert released == [dag["tasks"]["D"]["id"]]
        await queue.ack(queue_name, [(t.id, t.lease_token) for t in flipped])
        await queue.lease(queue_name, 10, "drain:1", 1000)  # D, so the next round starts clean


async def test_a_thousand_node_dag_completes_in_a_valid_order(
    api: TestClient[Any, Any],
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
) -> None:
    rng = random.Random(1000)
    tasks = []
    for i in range(1000):
        deps = sorted({f"n{rng.randrange(i)}" for _ in range(rng.randrange(3))}) if i else []
        tasks.append(node(f"n{i}", "t.noop", queue_name, *deps))
    rng.shuffle(tasks)

    async def noop(ctx: TaskContext, payload: Any) -> None:
        return None

    dag = await post_dag(api, tasks)
    async with running_worker(settings, store, queue, registry_of(t__noop=noop)):

        async def finished() -> bool:
            return (
                await store.pool.fetchval(
                    "SELECT count(*) FROM tasks WHERE dag_id = $1 AND status = 'SUCCESS'",
                    uuid.UUID(dag["id"]),
                )
                == 1000
            )

        await eventually(finished, timeout=60, interval=0.1)
    bad = await store.pool.fetchval(
        "SELECT count(*) FROM edges e JOIN tasks p ON p.id = e.parent"
        " JOIN tasks c ON c.id = e.child WHERE c.started_at < p.finished_at"
    )
    assert bad == 0
    got = await (await api.get(f"/v1/dags/{dag['id']}", headers=bearer())).json()
    assert got["status"] == "SUCCESS" and len(got["tasks"]) == 1000


async def test_failure_cascades_to_every_descendant_and_redrive_revives_them(
    api: TestClient[Any, Any],
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
) -> None:
    allowed = asyncio.Event()

    async def gate(ctx: TaskContext, payload: Any) -> str:
        if payload.get("gate") and not allowed.is_set():
            raise NonRetryableError("not yet")
        return "ok"

    dag = await post_dag(
        api,
        [
            node("A", "t.gate", queue_name, payload={"gate": True}, max_retries=0),
            node("B", "t.gate", queue_name, "A"),
            node("C", "t.gate", queue_name, "A"),
            node("D", "t.gate", queue_name, "B", "C"),
            node("E", "t.gate", queue_name),
        ],
    )
    ids = {k: t["id"] for k, t in dag["tasks"].items()}
    async with running_worker(settings, store, queue, registry_of(t__gate=gate)):
        assert (await wait_terminal(store, ids["A"]))["status"] == "FAILED"
        for key in "BCD":
            row = await wait_terminal(store, ids[key])
            assert row["status"] == "UPSTREAM_FAILED"
            assert f"upstream task A ({ids['A']})" in row["error"]["message"]
        assert (await wait_terminal(store, ids["E"]))["status"] == "SUCCESS"
        got = await (await api.get(f"/v1/dags/{dag['id']}", headers=bearer())).json()
        assert got["status"] == "FAILED"

        allowed.set()
        resp = await api.post(f"/v1/tasks/{ids['A']}/retry", headers=bearer())
        assert resp.status == 200, await resp.text()
        redriven = await resp.json()
        assert redriven["status"] in ("PENDING", "RUNNING", "SUCCESS")
        assert [h["outcome"] for h in redriven["attempt_history"]] == ["ERROR"]
        for key in "ABCD":
            assert (await wait_terminal(store, ids[key]))["status"] == "SUCCESS"
    row = await store.get(uuid.UUID(ids["A"]), None)
    assert (row["attempt"], row["attempt_base"]) == (2, 1)
    again = await api.post(f"/v1/tasks/{ids['A']}/retry", headers=bearer())
    assert again.status == 409


async def test_cycle_is_rejected_and_nothing_is_stored(
    api: TestClient[Any, Any], store: TaskStore, queue_name: str
) -> None:
    resp = await api.post(
        "/v1/dags",
        headers=bearer(),
        json={
            "name": "loop",
            "tasks": [
                node("A", "t.x", queue_name, "C"),
                node("B", "t.x", queue_name, "A"),
                node("C", "t.x", queue_name, "B"),
                node("D", "t.x", queue_name),
            ],
        },
    )
    assert resp.status == 422
    body = await resp.json()
    assert body["error"]["code"] == "validation_failed"
    assert "cycle" in body["error"]["message"]
    for key in "ABC":
        assert key in body["error"]["message"]
    assert await store.pool.fetchval("SELECT count(*) FROM tasks") == 0
    assert await store.pool.fetchval("SELECT count(*) FROM dags") == 0


async def test_unknown_keys_duplicates_and_self_edges_are_named(
    api: TestClient[Any, Any], queue_name: str
) -> None:
    resp = await api.post(
        "/v1/dags",
        headers=bearer(),
        json={
            "name": "bad",
            "tasks": [
                node("A", "t.x", queue_name, "A"),
                node("B", "t.x", queue_name, "nope"),
                node("B", "t.x", queue_name),
            ],
        },
    )
    assert resp.status == 422
    fields = {d["field"] for d in (await resp.json())["error"]["details"]}
    assert fields == {"tasks[0].depends_on", "tasks[1].depends_on", "tasks[2].key"}


async def test_depends_on_existing_tasks(
    api: TestClient[Any, Any],
    settings: Settings,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
) -> None:
    async def ok(ctx: TaskContext, payload: Any) -> Any:
        if payload.get("fail"):
            raise NonRetryableError("no")
        return dict(ctx.parent_results)

    async def submit(**fields: Any) -> Any:
        resp = await api.post(
            "/v1/tasks", headers=bearer(), json={"type": "t.ok", "queue": queue_name, **fields}
        )
        assert resp.status == 201, await resp.text()
        return await resp.json()

    parent = await submit()
    waiting = await submit(depends_on=[parent["id"]])
    assert waiting["status"] == "WAITING"
    async with running_worker(settings, store, queue, registry_of(t__ok=ok)):
        done = await wait_terminal(store, waiting["id"])
        assert done["status"] == "SUCCESS"
        assert done["result"] == {parent["id"]: {}}  # the parent returned its own (empty) parents
        after = await submit(depends_on=[parent["id"]])
        assert after["status"] == "PENDING"  # a parent already SUCCESS counts as met
        failing = await submit(payload={"fail": True}, max_retries=0)
        assert (await wait_terminal(store, failing["id"]))["status"] == "FAILED"
        doomed = await submit(depends_on=[failing["id"]])
        assert doomed["status"] == "UPSTREAM_FAILED"
        assert (await wait_terminal(store, after["id"]))["status"] == "SUCCESS"


async def test_depends_on_another_tenants_task_is_404(
    api: TestClient[Any, Any], queue_name: str
) -> None:
    other = await api.post(
        "/v1/tasks", headers=bearer("mallory"), json={"type": "t.x", "queue": queue_name}
    )
    oid = (await other.json())["id"]
    for path, body in [
        ("/v1/tasks", {"type": "t.x", "queue": queue_name, "depends_on": [oid]}),
        ("/v1/dags", {"name": "x", "tasks": [node("A", "t.x", queue_name, oid)]}),
    ]:
        resp = await api.post(path, headers=bearer("alice"), json=body)
        assert resp.status == 404, (path, await resp.text())
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_other_tenants_dag_is_404(api: TestClient[Any, Any], queue_name: str) -> None:
    dag = await post_dag(api, [node("A", "t.x", queue_name)], sub="mallory")
    resp = await api.get(f"/v1/dags/{dag['id']}", headers=bearer("alice"))
    assert resp.status == 404
    resp = await api.get(f"/v1/dags/{dag['id']}", headers=bearer("root", scopes=("admin",)))
    assert resp.status == 200
