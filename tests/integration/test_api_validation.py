"""Hostile and malformed input: every answer is a documented 4xx in the error format, never a 500.

Each test walks a table of cases against one server and one fresh database (a database per case
would make this file slow) and reports every failing case by name, not only the first.
"""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from taskd.store.tasks import TaskStore
from tests.conftest import bearer, token

Client = TestClient[Any, Any]
C = TypeVar("C")
JSON = {"Content-Type": "application/json"}
_CODE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


async def expect_error(
    resp: ClientResponse, status: int, code: str | None = None, fields: list[str] | None = None
) -> dict[str, Any]:
    """Assert an API.md error body with this status; each of ``fields`` must be named in details.

    A field is named by itself or by a path inside it (``labels`` by ``labels[...]``).
    """
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    body = await resp.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) == {"code", "message", "details"}, err
    assert _CODE.fullmatch(err["code"]), err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["details"], list), err
    for detail in err["details"]:
        assert set(detail) == {"field", "problem"}, detail
        assert isinstance(detail["field"], str) and detail["field"], detail
        assert isinstance(detail["problem"], str) and detail["problem"], detail
    if status == 422:
        assert err["details"], "a 422 lists the field problems"
    if code is not None:
        assert err["code"] == code, err
    named = [d["field"] for d in err["details"]]
    for field in fields or []:
        inside = [n for n in named if n == field or n.startswith((f"{field}.", f"{field}["))]
        assert inside, (field, err)
    return err


async def each(cases: Iterable[tuple[str, C]], check: Callable[[C], Awaitable[None]]) -> None:
    """Run ``check`` on every case; fail once at the end, listing every case that failed."""
    failures = []
    for name, case in cases:
        try:
            await check(case)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)


async def post_raw(
    api: Client, body: bytes | str, path: str = "/v1/tasks", **headers: str
) -> ClientResponse:
    data = body.encode() if isinstance(body, str) else body
    return await api.post(path, data=io.BytesIO(data), headers={**bearer(), **JSON, **headers})


async def stored_count(store: TaskStore) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM tasks"))


# --- submission bodies that fail validation (422, naming the field) -------------------------------

INVALID: list[tuple[str, tuple[dict[str, Any], str]]] = [
    ("missing type", ({"payload": {}}, "type")),
    ("unknown field", ({"type": "a", "colour": "red"}, "colour")),
    ("unknown nested field", ({"type": "a", "backoff": {"base": 1, "speed": 2}}, "backoff.speed")),
    ("priority as string", ({"type": "a", "priority": "high"}, "priority")),
    ("priority as float", ({"type": "a", "priority": 1.5}, "priority")),
    ("priority as bool", ({"type": "a", "priority": True}, "priority")),
    ("priority as null", ({"type": "a", "priority": None}, "priority")),
    ("priority 101", ({"type": "a", "priority": 101}, "priority")),
    ("priority -101", ({"type": "a", "priority": -101}, "priority")),
    ("type with a space", ({"type": "email send"}, "type")),
    ("type with a slash", ({"type": "a/b"}, "type")),
    ("empty type", ({"type": ""}, "type")),
    ("type of 129 chars", ({"type": "a" * 129}, "type")),
    ("type with a trailing newline", ({"type": "a\n"}, "type")),
    ("type not a string", ({"type": 7}, "type")),
    ("queue with uppercase", ({"type": "a", "queue": "Emails"}, "queue")),
    ("queue with a dot", ({"type": "a", "queue": "a.b"}, "queue")),
    ("queue of 65 chars", ({"type": "a", "queue": "q" * 65}, "queue")),
    ("queue with a trailing newline", ({"type": "a", "queue": "q\n"}, "queue")),
    ("negative delay", ({"type": "a", "delay": -1}, "delay")),
    ("delay beyond any date", ({"type": "a", "delay": 1e300}, "delay")),
    ("delay and run_at", ({"type": "a", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "delay")),
    ("naive run_at", ({"type": "a", "run_at": "2030-01-01T00:00:00"}, "run_at")),
    ("run_at not a time", ({"type": "a", "run_at": "tomorrow"}, "run_at")),
    ("run_at in year 1", ({"type": "a", "run_at": "0001-01-01T00:00:00+05:00"}, "run_at")),
    ("run_at past 9999 in UTC", ({"type": "a", "run_at": "9999-12-31T23:00:00-05:00"}, "run_at")),
    ("max_retries 101", ({"type": "a", "max_retries": 101}, "max_retries")),
    ("max_retries -1", ({"type": "a", "max_retries": -1}, "max_retries")),
    ("timeout 0", ({"type": "a", "timeout": 0}, "timeout")),
    ("negative timeout", ({"type": "a", "timeout": -5}, "timeout")),
    ("backoff jitter", ({"type": "a", "backoff": {"jitter": "some"}}, "backoff.jitter")),
    ("backoff factor below 1", ({"type": "a", "backoff": {"factor": 0.5}}, "backoff.factor")),
    ("empty idempotency key", ({"type": "a", "idempotency_key": ""}, "idempotency_key")),
    ("idempotency key of 256", ({"type": "a", "idempotency_key": "k" * 256}, "idempotency_key")),
    ("labels not strings", ({"type": "a", "labels": {"k": 1}}, "labels")),
    ("labels not an object", ({"type": "a", "labels": ["k"]}, "labels")),
    ("notify on", ({"type": "a", "notify": {"on": ["RUNNING"]}}, "notify.on")),
    ("notify email", ({"type": "a", "notify": {"email": ["nobody"]}}, "notify.email[0]")),
    ("notify webhook", ({"type": "a", "notify": {"webhook": "ftp://x"}}, "notify.webhook")),
    ("NUL in payload value", ({"type": "a", "payload": {"to": "a\u0000b"}}, "payload")),
    ("NUL in payload key", ({"type": "a", "payload": {"a\u0000": 1}}, "payload")),
    ("NUL deep in payload", ({"type": "a", "payload": [[{"x": ["\u0000"]}]]}, "payload")),
    ("NUL as the payload", ({"type": "a", "payload": "\u0000"}, "payload")),
    ("NUL in label value", ({"type": "a", "labels": {"k": "v\u0000"}}, "labels")),
    ("NUL in label key", ({"type": "a", "labels": {"k\u0000": "v"}}, "labels")),
    ("NUL in idempotency key", ({"type": "a", "idempotency_key": "k\u0000"}, "idempotency_key")),
    ("NUL in notify email", ({"type": "a", "notify": {"email": ["a\u0000@b.io"]}}, "notify.email")),
    ("NUL in webhook", ({"type": "a", "notify": {"webhook": "https://x.io/\u0000"}}, "notify")),
]


async def test_invalid_submissions_are_422_naming_the_field(api: Client, store: TaskStore) -> None:
    async def check(case: tuple[dict[str, Any], str]) -> None:
        body, field = case
        resp = await api.post("/v1/tasks", json=body, headers=bearer())
        await expect_error(resp, 422, "validation_failed", [field])

    await each(INVALID, check)
    assert await stored_count(store) == 0


async def test_several_problems_are_all_reported(api: Client) -> None:
    body = {"type": "a", "delay": 1, "run_at": "2030-01-01T00:00:00", "payload": {"s": "\u0000"}}
    resp = await api.post("/v1/tasks", json=body, headers=bearer())
    await expect_error(resp, 422, "validation_failed", ["delay", "run_at", "payload"])


async def test_idempotency_key_header_is_checked(api: Client, store: TaskStore) -> None:
    resp = await api.post(
        "/v1/tasks",
        json={"type": "a", "idempotency_key": "one"},
        headers={**bearer(), "Idempotency-Key": "two"},
    )
    await expect_error(resp, 422, "validation_failed", ["idempotency_key"])
    for key in ["", "k" * 256]:
        resp = await api.post(
            "/v1/tasks", json={"type": "a"}, headers={**bearer(), "Idempotency-Key": key}
        )
        await expect_error(resp, 422, "validation_failed", ["Idempotency-Key"])
    assert await stored_count(store) == 0


async def test_idempotency_key_header_with_invalid_utf8(api: Client, store: TaskStore) -> None:
    # aiohttp's client will not send such bytes, so speak HTTP/1.1 by hand.
    assert api.server.host is not None and api.server.port is not None
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    body = b'{"type": "a"}'
    writer.write(
        b"POST /v1/tasks HTTP/1.1\r\nHost: taskd\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token().encode() + b"\r\n"
        b"Idempotency-Key: k\xff\xfe\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, _ = answer.partition(b"\r\n")
    assert head == b"HTTP/1.1 422 Unprocessable Entity", answer
    assert b'"field":"Idempotency-Key"' in answer
    assert await stored_count(store) == 0


# --- bodies that are not acceptable JSON ----------------------------------------------------------

MALFORMED = [
    ("truncated", b"{"),
    ("empty", b""),
    ("single quotes", b"{'type': 'a'}"),
    ("trailing comma", b'{"type": "a",}'),
    ("not utf-8", b'{"type": "\xff\xfe"}'),
    ("trailing garbage", b'{"type": "a"} trailing'),
    ("NaN", b'{"type": "a", "payload": NaN}'),
    ("comment", b'{"type": "a" /* hi */}'),
    ("lone surrogate", b'{"type": "a", "payload": "\\ud800"}'),
    ("bad escape", b'{"type": "a\\q"}'),
]


async def test_malformed_json_is_400(api: Client, store: TaskStore) -> None:
    async def check(raw: bytes) -> None:
        await expect_error(await post_raw(api, raw), 400, "malformed_json")
        await expect_error(await post_raw(api, raw, "/v1/tasks/batch"), 400, "malformed_json")
        if raw:  # inside a batch, after a good item: still malformed, and nothing is stored
            batch = b'{"tasks": [{"type": "good"}, ' + raw + b"]}"
            resp = await post_raw(api, batch, "/v1/tasks/batch")
            await expect_error(resp, 400, "malformed_json")

    await each(MALFORMED, check)
    assert await stored_count(store) == 0


async def test_json_that_is_not_an_object_is_422(api: Client) -> None:
    async def check(raw: bytes) -> None:
        await expect_error(await post_raw(api, raw), 422, "validation_failed", ["body"])
        batch = b'{"tasks": [{"type": "a"}, ' + raw + b"]}"
        resp = await post_raw(api, batch, "/v1/tasks/batch")
        await expect_error(resp, 422, "validation_failed", ["tasks[1]"])

    await each([(raw.decode(), raw) for raw in [b"[]", b"null", b'"task"', b"42", b"true"]], check)


async def test_non_json_content_type_is_415(api: Client, store: TaskStore) -> None:
    async def check(content_type: str | None) -> None:
        headers = {**bearer(), **({"Content-Type": content_type} if content_type else {})}
        for path in ["/v1/tasks", "/v1/tasks/batch"]:
            resp = await api.post(path, data=io.BytesIO(b'{"type": "a"}'), headers=headers)
            await expect_error(resp, 415, "unsupported_media_type")

    types = ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None]
    await each([(str(t), t) for t in types], check)
    assert await stored_count(store) == 0
    resp = await post_raw(
        api, b'{"type": "a"}', **{"Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status == 201, await resp.text()


async def test_body_and_payload_limits(api: Client, store: TaskStore) -> None:
    # Over the 1 MiB request limit: 413, whichever route.
    big = '{"type": "a", "payload": "' + "x" * (1024 * 1024) + '"}'
    err = await expect_error(await post_raw(api, big), 413, "payload_too_large")
    assert "1048576" in err["message"]
    batch = '{"tasks": [' + big + "]}"
    await expect_error(await post_raw(api, batch, "/v1/tasks/batch"), 413, "payload_too_large")
    # Under the request limit but over the 256 KiB payload limit: 422 naming the payload.
    raw = '{"type": "a", "payload": "' + "x" * (1024 * 1024 - 100) + '"}'
    assert len(raw) < 1024 * 1024
    await expect_error(await post_raw(api, raw), 422, "validation_failed", ["payload"])
    over = {"type": "a", "payload": {"blob": "x" * (256 * 1024)}}
    resp = await api.post("/v1/tasks", json=over, headers=bearer())
    await expect_error(resp, 422, "validation_failed", ["payload"])
    resp = await api.post(
        "/v1/tasks/batch", json={"tasks": [{"type": "a"}, over]}, headers=bearer()
    )
    await expect_error(resp, 422, "validation_failed", ["tasks[1].payload"])
    assert await stored_count(store) == 0
    # Exactly at the payload limit is fine (the encoded payload is measured: 2 bytes of quotes).
    at_limit = {"type": "a", "payload": "x" * (256 * 1024 - 2)}
    resp = await api.post("/v1/tasks", json=at_limit, headers=bearer())
    assert resp.status == 201, await resp.text()


# --- odd but valid JSON ---------------------------------------------------------------------------

ODD_PAYLOADS: list[tuple[str, Any]] = [
    ("list", [1, 2, 3]),
    ("list of one string", ["only one string"]),
    ("list of lists", [[1], [2]]),
    ("empty list", []),
    ("null", None),
    ("string", "text"),
    ("zero", 0),
    ("false", False),
    ("nested", {"list": [1, [2, [3]]], "empty": {}}),
    ("unicode", {"ü": "😀 \u2028 \U0010ffff", "ключ": "値", "emoji🔑": ["ß"], "ctl": "\u0001\t"}),
    ("huge numbers", {"big": 123456789012345678901234567890, "neg": -(10**40), "tiny": 1e-300}),
]


async def test_any_json_payload_round_trips(api: Client) -> None:
    async def check(payload: Any) -> None:
        resp = await api.post("/v1/tasks", json={"type": "a", "payload": payload}, headers=bearer())
        assert resp.status == 201, await resp.text()
        created = await resp.json()
        assert created["payload"] == payload
        got = await (await api.get(f"/v1/tasks/{created['id']}", headers=bearer())).json()
        assert got["payload"] == payload

    await each(ODD_PAYLOADS, check)
    payloads = [p for _, p in ODD_PAYLOADS]
    tasks = [{"type": "a", "payload": p} for p in payloads]
    resp = await api.post("/v1/tasks/batch", json={"tasks": tasks}, headers=bearer())
    assert resp.status == 201, await resp.text()
    assert [t["payload"] for t in (await resp.json())["items"]] == payloads


async def test_numbers_out_of_range_are_422(api: Client, store: TaskStore) -> None:
    async def check(raw: bytes) -> None:
        await expect_error(await post_raw(api, raw), 422, "validation_failed")

    cases = [
        ("float overflow", b'{"type": "a", "payload": {"n": 1e400}}'),
        ("5000-digit integer", b'{"type": "a", "payload": [1' + b"0" * 5000 + b"]}"),
        ("huge priority", b'{"type": "a", "priority": 123456789012345678901234567890}'),
        ("priority overflow", b'{"type": "a", "priority": 1e400}'),
        ("max_retries 2^64", b'{"type": "a", "max_retries": 18446744073709551616}'),
    ]
    await each(cases, check)
    assert await stored_count(store) == 0


async def test_deeply_nested_payload_is_422(api: Client, store: TaskStore) -> None:
    async def check(depth: int) -> None:
        arrays = b'{"type": "a", "payload": ' + b"[" * depth + b"]" * depth + b"}"
        await expect_error(await post_raw(api, arrays), 422, "validation_failed")
        objects = b'{"type": "a", "payload": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
        await expect_error(await post_raw(api, objects), 422, "validation_failed")
        batch = b'{"tasks": [' + arrays + b"]}"
        await expect_error(await post_raw(api, batch, "/v1/tasks/batch"), 422, "validation_failed")

    await each([(str(d), d) for d in [129, 500, 990, 5000, 100_000]], check)
    assert await stored_count(store) == 0
    at_limit = b'{"type": "a", "payload": ' + b"[" * 128 + b"]" * 128 + b"}"
    resp = await post_raw(api, at_limit)
    assert resp.status == 201, await resp.text()


# --- paths and query strings ----------------------------------------------------------------------


async def test_bad_or_unknown_task_id_is_404(api: Client) -> None:
    async def check(task_id: str) -> None:
        resp = await api.get(f"/v1/tasks/{task_id}", headers=bearer())
        await expect_error(resp, 404, "not_found")

    ids = ["not-a-uuid", "1234", "%00", "00000000-0000-0000-0000-00000000000g", "%27%20OR%201=1"]
    await each([(i, i) for i in [*ids, str(uuid.uuid4()), str(uuid.UUID(int=0))]], check)


async def test_bad_wait_is_422(api: Client) -> None:
    resp = await api.post("/v1/tasks", json={"type": "a"}, headers=bearer())
    tid = (await resp.json())["id"]

    async def check(wait: str) -> None:
        resp = await api.get(f"/v1/tasks/{tid}", params={"wait": wait}, headers=bearer())
        await expect_error(resp, 422, "validation_failed", ["wait"])

    await each([(w, w) for w in ["-1", "61", "abc", "nan", "inf", "1e999", ""]], check)


LIST_QUERIES: list[tuple[str, tuple[dict[str, str], str]]] = [
    ("limit=0", ({"limit": "0"}, "limit")),
    ("limit=501", ({"limit": "501"}, "limit")),
    ("limit=-1", ({"limit": "-1"}, "limit")),
    ("limit=ten", ({"limit": "ten"}, "limit")),
    ("limit=2.5", ({"limit": "2.5"}, "limit")),
    ("garbage cursor", ({"cursor": "garbage!"}, "cursor")),
    ("short cursor", ({"cursor": "AAAA"}, "cursor")),
    ("NUL cursor", ({"cursor": "\u0000"}, "cursor")),
    ("unknown status", ({"status": "DONE"}, "status")),
    ("lowercase status", ({"status": "pending"}, "status")),
    ("dag_id", ({"dag_id": "nope"}, "dag_id")),
    ("created_after words", ({"created_after": "yesterday"}, "created_after")),
    ("naive created_after", ({"created_after": "2024-01-01T00:00:00"}, "created_after")),
    ("month 13", ({"created_before": "2024-13-01T00:00:00Z"}, "created_before")),
    ("label without value", ({"label": "novalue"}, "label")),
    ("label without key", ({"label": ":v"}, "label")),
    ("NUL label", ({"label": "k:\u0000"}, "label")),
    ("NUL type", ({"type": "\u0000"}, "type")),
    ("type with space", ({"type": "a b"}, "type")),
    ("NUL queue", ({"queue": "\u0000"}, "queue")),
    ("uppercase queue", ({"queue": "UPPER"}, "queue")),
]


async def test_bad_list_query_is_422(api: Client) -> None:
    async def check(case: tuple[dict[str, str], str]) -> None:
        params, field = case
        resp = await api.get("/v1/tasks", params=params, headers=bearer())
        await expect_error(resp, 422, "validation_failed", [field])

    await each(LIST_QUERIES, check)


async def test_extreme_time_filters_are_not_errors(api: Client) -> None:
    resp = await api.post("/v1/tasks", json={"type": "a"}, headers=bearer())
    tid = (await resp.json())["id"]

    async def check(case: tuple[dict[str, str], bool]) -> None:
        params, found = case
        resp = await api.get("/v1/tasks", params=params, headers=bearer())
        assert resp.status == 200, await resp.text()
        assert [t["id"] for t in (await resp.json())["items"]] == ([tid] if found else [])

    cases = [
        ("after the end of time", ({"created_after": "9999-12-31T23:00:00-05:00"}, False)),
        ("before year 1", ({"created_before": "0001-01-01T00:00:00+05:00"}, False)),
        ("after year 1", ({"created_after": "0001-01-01T00:00:00+05:00"}, True)),
        ("before the end of time", ({"created_before": "9999-12-31T23:00:00-05:00"}, True)),
    ]
    await each(cases, check)
