"""Authentication, scopes and tenancy on the /v1 routes, over real HTTP."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from taskd.api.app import create_app
from taskd.api.auth import Authenticator, mint_token
from taskd.api.context import ApiContext
from taskd.api.submit import SubmitService
from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore
from tests.conftest import SECRET, bearer, make_settings, token
from tests.integration.test_api_validation import each, expect_error

Client = TestClient[Any, Any]
CHALLENGE = 'Bearer error="invalid_token"'
AUDIENCE = "taskd"
ISSUER = "https://id.example.com"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT assembled by hand, for headers that pyjwt refuses to produce."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "scope": "tasks:read tasks:write",
        **extra,
    }


def tampered() -> str:
    """A real token whose claims were swapped for an admin's, keeping the old signature."""
    head, _, sig = token().split(".")
    forged = b64url(json.dumps(claims(scope="admin")).encode())
    return f"{head}.{forged}.{sig}"


BAD_AUTHORIZATION: list[tuple[str, str | None]] = [
    ("missing", None),
    ("empty", ""),
    ("basic scheme", "Basic YWxpY2U6cGFzcw=="),
    ("bearer without token", "Bearer "),
    ("not a jwt", "Bearer garbage"),
    ("three dots of garbage", "Bearer a.b.c"),
    ("token without scheme", token()),
    ("forged signature", "Bearer " + mint_token("another-secret-" + "y" * 40, "alice")),
    ("tampered claims", "Bearer " + tampered()),
    ("expired", "Bearer " + mint_token(SECRET, "alice", ttl_seconds=-60)),
    ("alg none", "Bearer " + hand_made({"alg": "none", "typ": "JWT"}, claims())),
    ("alg None", "Bearer " + hand_made({"alg": "None", "typ": "JWT"}, claims(scope="admin"))),
    ("alg not configured", "Bearer " + mint_token(SECRET * 2, "alice", algorithm="HS512")),
    ("no exp", "Bearer " + jwt.encode({"sub": "alice", "scope": "tasks:read"}, SECRET)),
    ("not yet valid", "Bearer " + jwt.encode(claims(nbf=int(time.time()) + 600), SECRET)),
    ("issued in the future", "Bearer " + jwt.encode(claims(iat=int(time.time()) + 600), SECRET)),
    ("no subject", "Bearer " + jwt.encode({**claims(), "sub": ""}, SECRET)),
    ("tenant not a string", "Bearer " + jwt.encode(claims(tenant=["a", "b"]), SECRET)),
    ("oversized garbage", "Bearer " + "a" * 8100),
]


async def expect_401(resp: ClientResponse) -> None:
    await expect_error(resp, 401, "unauthorized")
    assert resp.headers.get("WWW-Authenticate") == CHALLENGE


async def call(api: Client, route: str, authorization: str | None) -> ClientResponse:
    headers = {} if authorization is None else {"Authorization": authorization}
    task_id = uuid.uuid4()
    if route == "submit":
        return await api.post("/v1/tasks", json={"type": "a"}, headers=headers)
    if route == "batch":
        return await api.post("/v1/tasks/batch", json={"tasks": [{"type": "a"}]}, headers=headers)
    if route == "get":
        return await api.get(f"/v1/tasks/{task_id}", headers=headers)
    return await api.get("/v1/tasks", headers=headers)


ROUTES = ["submit", "batch", "get", "list"]


async def stored_count(store: TaskStore) -> int:
    return int(await store.pool.fetchval("SELECT count(*) FROM tasks"))


async def test_bad_tokens_are_401_with_the_challenge(api: Client, store: TaskStore) -> None:
    async def check(authorization: str | None) -> None:
        for route in ROUTES:
            await expect_401(await call(api, route, authorization))

    await each(BAD_AUTHORIZATION, check)
    assert await stored_count(store) == 0


async def test_authentication_comes_before_reading_the_body(api: Client) -> None:
    resp = await api.post("/v1/tasks", data=b"{not json", headers={"Content-Type": "text/plain"})
    await expect_401(resp)


async def test_a_good_token_works_everywhere(api: Client) -> None:
    for route in ROUTES:
        resp = await call(api, route, f"Bearer {token()}")
        assert resp.status in (200, 201, 404), (route, await resp.text())
    scheme_case = await call(api, "list", f"bearer {token()}")
    assert scheme_case.status == 200


@pytest.fixture
async def strict_api(database: str, store: TaskStore, queue: RedisQueue) -> AsyncIterator[Client]:
    """The API with an audience and an issuer configured."""
    settings = make_settings(database, auth={"audience": AUDIENCE, "issuer": ISSUER})
    auth = Authenticator(settings.auth)
    context = ApiContext(settings, store, queue, auth, SubmitService(store, queue, settings))
    client = TestClient(TestServer(create_app(context)))
    await client.start_server()
    yield client
    await client.close()
    await auth.close()


async def test_audience_and_issuer_are_checked_when_configured(strict_api: Client) -> None:
    async def check(kw: dict[str, str]) -> None:
        resp = await call(strict_api, "submit", "Bearer " + mint_token(SECRET, "alice", **kw))
        await expect_401(resp)

    cases: list[tuple[str, dict[str, str]]] = [
        ("no audience", {"issuer": ISSUER}),
        ("wrong audience", {"audience": "other", "issuer": ISSUER}),
        ("no issuer", {"audience": AUDIENCE}),
        ("wrong issuer", {"audience": AUDIENCE, "issuer": "https://evil.example.com"}),
        ("plain test token", {}),
    ]
    await each(cases, check)
    good = mint_token(SECRET, "alice", audience=AUDIENCE, issuer=ISSUER)
    resp = await call(strict_api, "submit", f"Bearer {good}")
    assert resp.status == 201, await resp.text()


async def test_missing_scope_is_403(api: Client, store: TaskStore) -> None:
    reader = bearer(scopes=("tasks:read",))["Authorization"]
    writer = bearer(scopes=("tasks:write",))["Authorization"]
    nothing = bearer(scopes=())["Authorization"]
    other = bearer(scopes=("tasks:admin", "TASKS:WRITE", "read"))["Authorization"]
    for authorization, routes in [
        (reader, ["submit", "batch"]),
        (writer, ["get", "list"]),
        (nothing, ROUTES),
        (other, ROUTES),
    ]:
        for route in routes:
            resp = await call(api, route, authorization)
            err = await expect_error(resp, 403, "forbidden")
            assert "tasks:" in err["message"]
    assert await stored_count(store) == 0
    assert (await call(api, "list", reader)).status == 200
    assert (await call(api, "submit", writer)).status == 201


async def test_admin_scope_alone_allows_everything(api: Client) -> None:
    admin = bearer("root", scopes=("admin",))
    resp = await api.post("/v1/tasks", json={"type": "a"}, headers=admin)
    assert resp.status == 201
    tid = (await resp.json())["id"]
    assert (await api.get(f"/v1/tasks/{tid}", headers=admin)).status == 200
    assert (await api.get("/v1/tasks", headers=admin)).status == 200


async def submit_as(api: Client, headers: dict[str, str], **body: Any) -> str:
    resp = await api.post("/v1/tasks", json={"type": "a", **body}, headers=headers)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


async def test_another_tenants_task_is_404_exactly_like_a_missing_one(api: Client) -> None:
    alices = await submit_as(api, bearer("alice"))
    missing = str(uuid.uuid4())
    for query in ["", "?wait=5"]:
        started = time.monotonic()
        theirs = await api.get(f"/v1/tasks/{alices}{query}", headers=bearer("bob"))
        nowhere = await api.get(f"/v1/tasks/{missing}{query}", headers=bearer("bob"))
        assert time.monotonic() - started < 4  # a 404 does not long-poll
        await expect_error(theirs, 404, "not_found")
        assert theirs.status == nowhere.status
        assert await theirs.read() == await nowhere.read()
        assert theirs.content_type == nowhere.content_type
        assert set(theirs.headers) - {"Date"} == set(nowhere.headers) - {"Date"}
    assert (await api.get(f"/v1/tasks/{alices}", headers=bearer("alice"))).status == 200


async def test_lists_show_only_the_callers_tenant(api: Client) -> None:
    alices = {await submit_as(api, bearer("alice"), labels={"k": "v"}) for _ in range(3)}
    bobs = {await submit_as(api, bearer("bob"), labels={"k": "v"}) for _ in range(2)}

    async def listed(headers: dict[str, str], **params: str) -> set[str]:
        resp = await api.get("/v1/tasks", params=params, headers=headers)
        assert resp.status == 200, await resp.text()
        return {t["id"] for t in (await resp.json())["items"]}

    assert await listed(bearer("alice")) == alices
    assert await listed(bearer("bob")) == bobs
    assert await listed(bearer("bob"), label="k:v", status="PENDING", type="a") == bobs
    assert await listed(bearer("carol")) == set()
    # A cursor from one tenant's page does not reveal another tenant's tasks.
    page = await (await api.get("/v1/tasks?limit=1", headers=bearer("alice"))).json()
    cursor = page["next_cursor"]
    assert cursor is not None
    assert await listed(bearer("bob"), cursor=cursor) <= bobs


async def test_tenant_claim_groups_callers(api: Client) -> None:
    tid = await submit_as(api, bearer("svc-1", tenant="acme"))
    assert (await api.get(f"/v1/tasks/{tid}", headers=bearer("svc-2", tenant="acme"))).status == 200
    # Without a tenant claim the tenant is the subject.
    assert (await api.get(f"/v1/tasks/{tid}", headers=bearer("acme"))).status == 200
    assert (await api.get(f"/v1/tasks/{tid}", headers=bearer("svc-1"))).status == 404
    own = await submit_as(api, bearer("acme"))
    listed = await (await api.get("/v1/tasks", headers=bearer("x", tenant="acme"))).json()
    assert {t["id"] for t in listed["items"]} == {tid, own}


async def test_admin_sees_every_tenant(api: Client) -> None:
    alices = await submit_as(api, bearer("alice"), queue="shared")
    bobs = await submit_as(api, bearer("bob"), queue="shared")
    admin = bearer("root", scopes=("admin",))
    for tid in (alices, bobs):
        resp = await api.get(f"/v1/tasks/{tid}", headers=admin)
        assert resp.status == 200
        assert (await resp.json())["id"] == tid
    page = await (await api.get("/v1/tasks", params={"queue": "shared"}, headers=admin)).json()
    assert {t["id"] for t in page["items"]} == {alices, bobs}
    # An admin's own submissions belong to the admin's tenant.
    mine = await submit_as(api, admin)
    assert (await api.get(f"/v1/tasks/{mine}", headers=bearer("alice"))).status == 404
    assert (await api.get(f"/v1/tasks/{mine}", headers=bearer("root"))).status == 200
