"""The /v1/schedules routes: create with the next five fires, validation (hostile expressions
answer 422 quickly), tenancy and scopes, change, pause/resume, trigger, backfill, fires,
configuration schedules."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from taskd.api.app import create_app
from taskd.api.auth import Authenticator
from taskd.api.context import ApiContext
from taskd.api.schedule_routes import CLOCK
from taskd.api.schedules import ScheduleService
from taskd.api.submit import SubmitService
from taskd.clock import FakeClock
from taskd.config.loader import build
from taskd.config.settings import Settings
from taskd.errors import ConfigError
from taskd.queue.client import RedisQueue
from taskd.schedule.spec import ScheduleSpec
from taskd.store.schedules import ScheduleStore
from taskd.store.tasks import TaskStore
from tests.conftest import bearer

Client = TestClient[Any, Any]


def body(queue: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": f"s-{uuid.uuid4().hex[:8]}",
        "cron": "0 9 * * 1-5",
        "timezone": "America/New_York",
        "task": {"type": "report.build", "queue": queue, "payload": {"kind": "daily"}},
        **fields,
    }


async def create(api: Client, queue: str, **fields: Any) -> Any:
    resp = await api.post("/v1/schedules", headers=bearer(), json=body(queue, **fields))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def problems(resp: Any) -> list[str]:
    assert resp.status == 422, await resp.text()
    return [d["field"] for d in (await resp.json())["error"]["details"]]


async def test_create_answers_with_the_next_five_fire_times(api: Client, queue_name: str) -> None:
    s = await create(api, queue_name)
    assert s["source"] == "api" and s["overlap"] == "skip" and s["catchup"] == "latest"
    assert (s["catchup_window"], s["max_catchup_runs"], s["jitter"]) == (3600, 10, 0)
    assert s["task"] == {"type": "report.build", "queue": queue_name, "payload": {"kind": "daily"}}
    fires = [
        datetime.fromisoformat(f).astimezone(ZoneInfo("America/New_York")) for f in s["next_fires"]
    ]
    assert len(fires) == 5 and fires == sorted(set(fires))
    assert all((f.hour, f.minute) == (9, 0) and f.weekday() < 5 for f in fires)
    assert s["next_fire_at"] == s["next_fires"][0]
    again = await api.get(f"/v1/schedules/{s['id']}", headers=bearer())
    assert (await again.json())["next_fires"] == s["next_fires"]
    every = await create(api, queue_name, cron=None, every=90)
    gaps = {
        (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
        for a, b in zip(every["next_fires"], every["next_fires"][1:], strict=False)
    }
    assert gaps == {90.0}


HOSTILE = [
    "61 * * * *",
    "* * * *",
    "0-4000000000 * * * *",
    "*/1," * 10_000 + "* * * * *",
    "0 0 " + "1-31," * 20_000 + "1 * *",
    "9" * 200_000,
    "0 0 30 2 *",
    "@reboot",
    "\u0000 * * * *",
]


@pytest.mark.parametrize("expr", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_expressions_are_422_naming_cron_quickly(
    api: Client, queue_name: str, expr: str
) -> None:
    started = time.perf_counter()
    resp = await api.post("/v1/schedules", headers=bearer(), json=body(queue_name, cron=expr))
    assert await problems(resp) == ["cron"]
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../../etc/passwd"}, "timezone"),
        ({"every": 60}, "cron"),  # both cron and every
        ({"cron": None}, "cron"),  # neither
        ({"cron": None, "every": 0.5}, "every"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"catchup": "most"}, "catchup"),
        ({"catchup_window": -1}, "catchup_window"),
        ({"max_catchup_runs": 0}, "max_catchup_runs"),
        ({"jitter": -3}, "jitter"),
        ({"name": "has space"}, "name"),
        ({"start_at": "2024-01-01T00:00:00"}, "start_at"),
        ({"end_at": "2001-01-01T00:00:00Z"}, "end_at"),
        ({"task": {"type": "bad type!"}}, "task.type"),
        ({"task": {"type": "ok", "delay": 5}}, "task.delay"),
        ({"task": {"type": "ok", "payload": "\u0000"}}, "task.payload"),
        ({"task": {"type": "ok", "notify": {"email": ["nope"]}}}, "task.notify.email[0]"),
    ],
)
async def test_invalid_fields_are_422_naming_the_field(
    api: Client, queue_name: str, fields: dict[str, Any], field: str
) -> None:
    resp = await api.post("/v1/schedules", headers=bearer(), json=body(queue_name, **fields))
    assert field in await problems(resp)


async def test_names_are_unique_per_tenant_and_tenants_are_isolated(
    api: Client, queue_name: str
) -> None:
    s = await create(api, queue_name, name="nightly")
    dup = await api.post("/v1/schedules", headers=bearer(), json=body(queue_name, name="nightly"))
    assert dup.status == 409
    other = bearer("bob")
    assert (
        await api.post("/v1/schedules", headers=other, json=body(queue_name, name="nightly"))
    ).status == 201
    for method, path in [
        ("GET", f"/v1/schedules/{s['id']}"),
        ("PATCH", f"/v1/schedules/{s['id']}"),
        ("DELETE", f"/v1/schedules/{s['id']}"),
        ("POST", f"/v1/schedules/{s['id']}/trigger"),
        ("GET", f"/v1/schedules/{s['id']}/fires"),
        ("GET", "/v1/schedules/not-a-uuid"),
    ]:
        resp = await api.request(method, path, headers=other, json={})
        assert resp.status == 404, (method, path)
    mine = await (await api.get("/v1/schedules", headers=bearer())).json()
    assert [i["id"] for i in mine["items"]] == [s["id"]] and "next_fires" not in mine["items"][0]
    named = await api.get("/v1/schedules?name=nightly", headers=bearer("root", scopes=("admin",)))
    assert len((await named.json())["items"]) == 2  # admin sees every tenant
    read_only = bearer(scopes=("tasks:read",))
    assert (await api.post("/v1/schedules", headers=read_only, json=body(queue_name))).status == 403
    assert (await api.post(f"/v1/schedules/{s['id']}/pause", headers=read_only)).status == 403
    assert (await api.get("/v1/schedules")).status == 401


async def test_patch_pause_resume_and_delete(api: Client, queue_name: str) -> None:
    s = await create(api, queue_name, jitter=5)
    resp = await api.patch(
        f"/v1/schedules/{s['id']}", headers=bearer(), json={"cron": "@daily", "timezone": "UTC"}
    )
    assert resp.status == 200, await resp.text()
    changed = await resp.json()
    assert (changed["cron"], changed["every"], changed["jitter"]) == ("0 0 * * *", None, 5)
    assert all(f.endswith("T00:00:00.000Z") for f in changed["next_fires"])
    to_every = await api.patch(f"/v1/schedules/{s['id']}", headers=bearer(), json={"every": 60})
    assert (await to_every.json())["cron"] is None
    bad = await api.patch(f"/v1/schedules/{s['id']}", headers=bearer(), json={"cron": "61 * * * *"})
    assert await problems(bad) == ["cron"]
    paused = await (await api.post(f"/v1/schedules/{s['id']}/pause", headers=bearer())).json()
    assert paused["paused"] and paused["next_fires"] == []
    resumed = await (await api.post(f"/v1/schedules/{s['id']}/resume", headers=bearer())).json()
    assert not resumed["paused"] and len(resumed["next_fires"]) == 5
    assert datetime.fromisoformat(resumed["next_fire_at"]) > datetime.now(UTC)
    other = await create(api, queue_name)
    clash = await api.patch(
        f"/v1/schedules/{s['id']}", headers=bearer(), json={"name": other["name"]}
    )
    assert clash.status == 409
    assert (await api.delete(f"/v1/schedules/{s['id']}", headers=bearer())).status == 204
    assert (await api.get(f"/v1/schedules/{s['id']}", headers=bearer())).status == 404


async def test_trigger_runs_now_and_fires_list_it(
    api: Client, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    s = await create(api, queue_name, paused=True)
    resp = await api.post(f"/v1/schedules/{s['id']}/trigger", headers=bearer())
    assert resp.status == 201
    fire = await resp.json()
    assert fire["outcome"] == "triggered"
    task = await (await api.get(f"/v1/tasks/{fire['task_id']}", headers=bearer())).json()
    assert task["type"] == "report.build" and task["payload"] == {"kind": "daily"}
    assert task["idempotency_key"].startswith(f"sched:{s['id']}:")
    assert await queue.tracked(queue_name, fire["task_id"]) == "ready"
    fires = await (await api.get(f"/v1/schedules/{s['id']}/fires", headers=bearer())).json()
    assert fires == {"items": [fire], "next_cursor": None}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC).timestamp())


@pytest.fixture
async def clocked_api(
    settings: Settings, store: TaskStore, queue: RedisQueue, clock: FakeClock
) -> AsyncIterator[Client]:
    """The api role's application with the schedule routes reading ``clock``."""
    auth = Authenticator(settings.auth)
    app = create_app(
        ApiContext(settings, store, queue, auth, SubmitService(store, queue, settings))
    )
    app[CLOCK] = clock
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()
    await auth.close()


async def test_backfill_lists_then_fires_each_instant_once(
    clocked_api: Client, clock: FakeClock, store: TaskStore, queue_name: str
) -> None:
    api = clocked_api
    s = await create(api, queue_name, cron="*/10 * * * *", timezone="UTC")
    clock.advance(3600)
    path = f"/v1/schedules/{s['id']}/backfill"
    window = {"from": "2024-05-01T12:00:00Z", "to": "2024-05-01T12:30:00Z"}
    dry = await api.post(path, headers=bearer(), json=window)
    assert dry.status == 200
    listed = await dry.json()
    assert listed["dry_run"] and not listed["truncated"]
    assert [f["instant"] for f in listed["fires"]] == [
        f"2024-05-01T12:{m:02d}:00.000Z" for m in (0, 10, 20, 30)
    ]
    assert not any(f["created"] or f["task_id"] for f in listed["fires"])
    done = await api.post(path, headers=bearer(), json={**window, "dry_run": False})
    assert done.status == 201
    assert all(f["created"] and f["outcome"] == "backfilled" for f in (await done.json())["fires"])
    again = await (await api.post(path, headers=bearer(), json={**window, "dry_run": False})).json()
    assert not any(f["created"] for f in again["fires"]) and all(
        f["task_id"] for f in again["fires"]
    )
    count = await store.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE idempotency_key LIKE $1", f"sched:{s['id']}:%"
    )
    assert count == 4
    future = await api.post(
        path, headers=bearer(), json={"from": "2024-05-01T12:00:00Z", "to": "2030-01-01T00:00:00Z"}
    )
    assert await problems(future) == ["to"]
    big = await api.post(
        path, headers=bearer(), json={"from": "2024-01-01T00:00:00Z", "to": "2024-05-01T12:30:00Z"}
    )
    assert (await big.json())["truncated"] is True


async def test_fires_are_paginated_newest_first(api: Client, queue_name: str) -> None:
    s = await create(api, queue_name)
    for _ in range(3):
        assert (await api.post(f"/v1/schedules/{s['id']}/trigger", headers=bearer())).status == 201
    page = await (await api.get(f"/v1/schedules/{s['id']}/fires?limit=2", headers=bearer())).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = await api.get(
        f"/v1/schedules/{s['id']}/fires?limit=2&cursor={page['next_cursor']}", headers=bearer()
    )
    items = page["items"] + (await rest.json())["items"]
    assert len(items) == 3 and [i["instant"] for i in items] == sorted(
        (i["instant"] for i in items), reverse=True
    )
    bad = await api.get(f"/v1/schedules/{s['id']}/fires?cursor=%%%", headers=bearer())
    assert await problems(bad) == ["cursor"]


async def test_configured_schedules_are_upserted_by_name_and_read_only(
    api: Client, settings: Settings, store: TaskStore, queue: RedisQueue, queue_name: str
) -> None:
    clock = FakeClock(datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC).timestamp())
    service = ScheduleService(ScheduleStore(store), SubmitService(store, queue, settings), clock)
    task = {"type": "report.build", "queue": queue_name}
    spec = ScheduleSpec(name="nightly", tenant="alice", cron="0 2 * * *", task=task)
    assert await service.declare([spec]) == []
    rows = await service.store.page("alice", "nightly", None, 10)
    first = rows[0]
    assert first["source"] == "config"
    assert first["next_fire_at"] == datetime(2024, 5, 2, 2, tzinfo=UTC)
    for method, path in [
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/pause"),
        ("POST", "/resume"),
    ]:
        resp = await api.request(
            method, f"/v1/schedules/{first['id']}{path}", headers=bearer(), json={"jitter": 1}
        )
        assert resp.status == 409, (method, path)
    assert (await api.post(f"/v1/schedules/{first['id']}/trigger", headers=bearer())).status == 201
    # A restart days later with the same timing keeps the fire state (catch-up applies) ...
    clock.advance(3 * 86400)
    await service.declare(
        [
            ScheduleSpec(
                name="nightly", tenant="alice", cron="0 2 * * *", task={**task, "priority": 5}
            )
        ]
    )
    kept = await service.store.get(first["id"], None)
    assert kept is not None and kept["next_fire_at"] == first["next_fire_at"]
    assert kept["task"]["priority"] == 5
    # ... a new timing moves it, and a schedule no longer declared is removed.
    await service.declare(
        [ScheduleSpec(name="nightly", tenant="alice", cron="0 3 * * *", task=task)]
    )
    moved = await service.store.get(first["id"], None)
    assert moved is not None and moved["next_fire_at"] == datetime(2024, 5, 5, 3, tzinfo=UTC)
    assert await service.declare([]) == [("alice", "nightly")]
    assert await service.store.get(first["id"], None) is None
    with pytest.raises(ConfigError, match="nightly"):
        await service.declare(
            [ScheduleSpec(name="nightly", cron="0 2 * * *", task={"type": "no way"})]
        )


def test_schedules_are_read_from_the_configuration() -> None:
    s = build(
        {
            "schedules": [
                {
                    "name": "nightly",
                    "cron": "0 2 * * *",
                    "timezone": "Europe/London",
                    "task": {"type": "report.build", "payload": {"day": "2024-01-01"}},
                    "catchup": "none",
                }
            ]
        }
    )
    assert s.schedules[0].catchup == "none" and s.schedules[0].tenant == "default"
    for bad, word in [
        ({"cron": "61 * * * *"}, "cron"),
        ({"timezone": "Nowhere/Land"}, "timezone"),
        ({"overlap": "often"}, "overlap"),
        ({"task": {}}, "type"),
        ({"name": "a b"}, "name"),
    ]:
        item = {"name": "x", "cron": "0 2 * * *", "task": {"type": "t"}, **bad}
        with pytest.raises(ConfigError, match=word):
            build({"schedules": [item]})
