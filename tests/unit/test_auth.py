"""Tests for taskd.api.auth: bearer parsing, algorithm policy, claims, PEM and JWKS keys."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm

from taskd.api.auth import Authenticator, InvalidToken, Principal, mint_token
from taskd.config.settings import AuthSettings
from taskd.errors import ConfigError

# 64 bytes: long enough for HS512 too, so pyjwt never warns (warnings are errors here).
SECRET = "x" * 32 + "y" * 32
OTHER_SECRET = "z" * 64

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PRIVATE_PEM = RSA_KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()
RSA_PUBLIC_PEM = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A token built without pyjwt, for headers pyjwt refuses to produce."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 600, **extra}


def bearer(token: str) -> str:
    return f"Bearer {token}"


@pytest.fixture
async def hs_auth() -> AsyncIterator[Authenticator]:
    auth = Authenticator(AuthSettings(jwt_secret=SECRET))
    yield auth
    await auth.close()


async def rejected(auth: Authenticator, header: str | None) -> str:
    with pytest.raises(InvalidToken) as caught:
        await auth.authenticate(header)
    return str(caught.value)


# --- HS256 and claims ---------------------------------------------------------------------------


async def test_valid_token_defaults_tenant_to_subject(hs_auth: Authenticator) -> None:
    principal = await hs_auth.authenticate(bearer(mint_token(SECRET, "alice")))
    assert principal == Principal("alice", "alice", frozenset({"tasks:read", "tasks:write"}))
    assert principal.allows("tasks:read")
    assert not principal.allows("admin")
    assert not principal.is_admin
    assert principal.tenant_filter() == "alice"


async def test_tenant_claim_and_admin(hs_auth: Authenticator) -> None:
    token = mint_token(SECRET, "bob", tenant="acme", scopes=["admin"])
    principal = await hs_auth.authenticate(f"bEaReR   {token}  ")
    assert (principal.subject, principal.tenant) == ("bob", "acme")
    assert principal.is_admin
    assert principal.allows("tasks:write")
    assert principal.allows("anything:else")
    assert principal.tenant_filter() is None


async def test_scope_is_optional(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    principal = await hs_auth.authenticate(bearer(token))
    assert principal.scopes == frozenset()
    assert not principal.allows("tasks:read")


async def test_expired(hs_auth: Authenticator) -> None:
    token = mint_token(SECRET, "alice", ttl_seconds=-5)
    assert await rejected(hs_auth, bearer(token)) == "token has expired"


async def test_leeway_and_injected_clock() -> None:
    token = mint_token(SECRET, "alice", ttl_seconds=60)
    late = time.time() + 90
    strict = Authenticator(AuthSettings(jwt_secret=SECRET), clock=lambda: late)
    lenient = Authenticator(AuthSettings(jwt_secret=SECRET, leeway_seconds=60), clock=lambda: late)
    assert await rejected(strict, bearer(token)) == "token has expired"
    assert (await lenient.authenticate(bearer(token))).subject == "alice"


async def test_not_yet_valid(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + 300), SECRET, algorithm="HS256")
    assert await rejected(hs_auth, bearer(token)) == "token is not yet valid"


async def test_issued_in_the_future(hs_auth: Authenticator) -> None:
    token = jwt.encode(claims(iat=int(time.time()) + 300), SECRET, algorithm="HS256")
    assert await rejected(hs_auth, bearer(token)) == "token was issued in the future"


async def test_missing_exp(hs_auth: Authenticator) -> None:
    token = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    assert await rejected(hs_auth, bearer(token)) == "token has no exp claim"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"sub": ""}, "token subject is missing or malformed"),
        ({"sub": None}, "token subject is missing or malformed"),
        ({"sub": 42}, "token subject is missing or malformed"),
        ({"tenant": ""}, "token tenant is malformed"),
        ({"tenant": 7}, "token tenant is malformed"),
        ({"tenant": "acme\x00"}, "token tenant is malformed"),  # Postgres text cannot hold NUL
        ({"sub": "al\x00ice"}, "token subject is missing or malformed"),
        ({"scope": ["admin"]}, "token scope is malformed"),
        ({"exp": "tomorrow"}, "token claim exp is not a number"),
        ({"exp": True}, "token claim exp is not a number"),
        ({"nbf": float("inf")}, "token claim nbf is not a number"),
    ],
)
async def test_bad_claims(hs_auth: Authenticator, extra: dict[str, Any], message: str) -> None:
    token = jwt.encode(claims(**extra), SECRET, algorithm="HS256")
    assert await rejected(hs_auth, bearer(token)) == message


async def test_missing_sub(hs_auth: Authenticator) -> None:
    payload = claims()
    del payload["sub"]
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    assert await rejected(hs_auth, bearer(token)) == "token subject is missing or malformed"


async def test_forged_signature(hs_auth: Authenticator) -> None:
    token = mint_token(OTHER_SECRET, "alice")
    assert await rejected(hs_auth, bearer(token)) == "token signature is invalid"


async def test_alg_none_is_refused(hs_auth: Authenticator) -> None:
    for alg in ("none", "None", "NONE"):
        token = hand_made({"alg": alg, "typ": "JWT"}, claims())
        assert await rejected(hs_auth, bearer(token)) == "token algorithm is not accepted"


async def test_missing_alg_is_refused(hs_auth: Authenticator) -> None:
    token = hand_made({"typ": "JWT"}, claims(), b"sig")
    assert await rejected(hs_auth, bearer(token)) == "token algorithm is not accepted"


async def test_unconfigured_algorithm_is_refused(hs_auth: Authenticator) -> None:
    token = mint_token(SECRET, "alice", algorithm="HS512")
    assert await rejected(hs_auth, bearer(token)) == "token algorithm is not accepted"


async def test_hs_refused_without_secret() -> None:
    auth = Authenticator(AuthSettings())
    message = await rejected(auth, bearer(mint_token(SECRET, "alice")))
    assert "no shared secret" in message


async def test_audience() -> None:
    auth = Authenticator(AuthSettings(jwt_secret=SECRET, audience="taskd"))
    ok = mint_token(SECRET, "alice", audience="taskd")
    assert (await auth.authenticate(bearer(ok))).subject == "alice"
    wrong = mint_token(SECRET, "alice", audience="billing")
    assert await rejected(auth, bearer(wrong)) == "token audience is not accepted"
    absent = mint_token(SECRET, "alice")
    assert await rejected(auth, bearer(absent)) == "token has no aud claim"


async def test_issuer() -> None:
    auth = Authenticator(AuthSettings(jwt_secret=SECRET, issuer="https://idp.example"))
    ok = mint_token(SECRET, "alice", issuer="https://idp.example")
    assert (await auth.authenticate(bearer(ok))).subject == "alice"
    wrong = mint_token(SECRET, "alice", issuer="https://evil.example")
    assert await rejected(auth, bearer(wrong)) == "token issuer is not accepted"


# --- the header --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("   ", "missing bearer token"),
        ("Bearer", "missing bearer token"),
        ("Bearer   ", "missing bearer token"),
        ("Basic x", "authorization scheme must be Bearer"),
        ("Basic dXNlcjpwYXNz", "authorization scheme must be Bearer"),
        ("Token abc", "authorization scheme must be Bearer"),
        ("Bearer garbage", "token is malformed"),
        ("Bearer a.b.c", "token is malformed"),
        ("Bearer ééé.é.é", "token is malformed"),
        ("Bearer \udcff.x.y", "token is malformed"),
    ],
)
async def test_bad_headers(hs_auth: Authenticator, header: str | None, message: str) -> None:
    assert await rejected(hs_auth, header) == message


async def test_oversize_token(hs_auth: Authenticator) -> None:
    padded = mint_token(SECRET, "alice", tenant="t" * 8000)
    assert len(padded) > 8 * 1024
    assert await rejected(hs_auth, bearer(padded)) == "token is too long"


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithms", [("none",), ("HS256", "NONE"), ("HS257",)])
def test_bad_algorithm_configuration(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        Authenticator(AuthSettings(jwt_secret=SECRET, algorithms=algorithms))


def test_bad_public_key_configuration() -> None:
    with pytest.raises(ConfigError):
        Authenticator(AuthSettings(algorithms=("RS256",), public_key="not a key"))


def test_mint_refuses_none() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        mint_token(SECRET, "alice", algorithm="none")


# --- RS256 with a PEM public key ----------------------------------------------------------------


async def test_rs256_with_pem_public_key() -> None:
    auth = Authenticator(AuthSettings(algorithms=("RS256",), public_key=RSA_PUBLIC_PEM))
    token = mint_token(RSA_PRIVATE_PEM, "carol", tenant="acme", algorithm="RS256")
    principal = await auth.authenticate(bearer(token))
    assert (principal.subject, principal.tenant) == ("carol", "acme")

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(), other, algorithm="RS256")
    assert await rejected(auth, bearer(forged)) == "token signature is invalid"


async def test_rsa_key_does_not_verify_other_families() -> None:
    # PS256 and ES256 configured alongside RS256: the RSA key must not verify an ES256 token.
    auth = Authenticator(
        AuthSettings(algorithms=("RS256", "PS256", "ES256"), public_key=RSA_PUBLIC_PEM)
    )
    ps = jwt.encode(claims(), RSA_KEY, algorithm="PS256")
    assert (await auth.authenticate(bearer(ps))).subject == "alice"
    es = jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    await rejected(auth, bearer(es))


def hs256_signed_with(key: bytes, payload: dict[str, Any]) -> str:
    """HS256 by hand: pyjwt itself refuses to use a PEM as an HMAC secret."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


async def test_algorithm_confusion_is_refused() -> None:
    token = hs256_signed_with(RSA_PUBLIC_PEM.encode(), claims(scope="admin"))
    rs_only = Authenticator(AuthSettings(algorithms=("RS256",), public_key=RSA_PUBLIC_PEM))
    assert await rejected(rs_only, bearer(token)) == "token algorithm is not accepted"
    # With both families configured, HS still verifies with the shared secret, never the PEM.
    both = Authenticator(
        AuthSettings(algorithms=("HS256", "RS256"), jwt_secret=SECRET, public_key=RSA_PUBLIC_PEM)
    )
    assert await rejected(both, bearer(token)) == "token signature is invalid"


# --- ES256 through a real JWKS endpoint ---------------------------------------------------------


@dataclass
class FakeClock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class JwksServer:
    url: str
    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    hits: int = 0


def es256_key(kid: str) -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


def es256_token(private: ec.EllipticCurvePrivateKey, kid: str | None, **extra: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**extra), private, algorithm="ES256", headers=headers)


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = JwksServer(url="")

    async def handler(request: web.Request) -> web.Response:
        server.hits += 1
        if server.status != 200:
            return web.Response(status=server.status, text="down")
        return web.json_response({"keys": server.keys})

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/jwks.json"
    yield server
    await runner.cleanup()


@pytest.fixture
async def jwks_auth(
    jwks: JwksServer,
) -> AsyncIterator[tuple[Authenticator, FakeClock]]:
    clock = FakeClock()
    settings = AuthSettings(algorithms=("ES256",), jwks_url=jwks.url, jwks_cache_seconds=300)
    auth = Authenticator(settings, clock=clock)
    yield auth, clock
    await auth.close()


async def test_es256_via_jwks_is_cached(
    jwks: JwksServer, jwks_auth: tuple[Authenticator, FakeClock]
) -> None:
    auth, clock = jwks_auth
    private, jwk = es256_key("k1")
    jwks.keys = [jwk]
    for _ in range(3):
        principal = await auth.authenticate(bearer(es256_token(private, "k1", tenant="acme")))
        assert principal.tenant == "acme"
    assert jwks.hits == 1
    clock.now += 301  # the cache expires
    await auth.authenticate(bearer(es256_token(private, "k1")))
    assert jwks.hits == 2


async def test_cold_cache_burst_fetches_once(
    jwks: JwksServer, jwks_auth: tuple[Authenticator, FakeClock]
) -> None:
    auth, _ = jwks_auth
    private, jwk = es256_key("k1")
    jwks.keys = [jwk]
    token = bearer(es256_token(private, "k1"))
    principals = await asyncio.gather(*(auth.authenticate(token) for _ in range(20)))
    assert {p.subject for p in principals} == {"alice"}
    assert jwks.hits == 1


async def test_key_rotation_refetches_once_per_interval(
    jwks: JwksServer, jwks_auth: tuple[Authenticator, FakeClock]
) -> None:
    auth, clock = jwks_auth
    old, old_jwk = es256_key("old")
    new, new_jwk = es256_key("new")
    jwks.keys = [old_jwk]
    await auth.authenticate(bearer(es256_token(old, "old")))
    jwks.keys = [old_jwk, new_jwk]

    # Within 10 s of the last fetch an unknown kid does not reach the endpoint.
    clock.now += 5
    await rejected(auth, bearer(es256_token(new, "new")))
    assert jwks.hits == 1

    clock.now += 6
    assert (await auth.authenticate(bearer(es256_token(new, "new")))).subject == "alice"
    assert jwks.hits == 2

    # Forged kids right after that are refused without hammering the endpoint.
    for i in range(5):
        message = await rejected(auth, bearer(es256_token(new, f"forged-{i}")))
        assert message == "no key in the signing key set matches the token"
    assert jwks.hits == 2


async def test_kid_must_match_a_key_and_its_alg(
    jwks: JwksServer, jwks_auth: tuple[Authenticator, FakeClock]
) -> None:
    auth, _ = jwks_auth
    private, jwk = es256_key("k1")
    impostor, _ = es256_key("k1")
    jwks.keys = [jwk]
    forged = es256_token(impostor, "k1")
    assert await rejected(auth, bearer(forged)) == "token signature is invalid"
    # No kid and a single key in the set: that key is used.
    assert (await auth.authenticate(bearer(es256_token(private, None)))).subject == "alice"
    jwks.keys = [{**jwk, "alg": "ES384"}]
    # A JWK that pins another algorithm is not used for this one.
    pinned = Authenticator(AuthSettings(algorithms=("ES256",), jwks_url=jwks.url))
    try:
        message = await rejected(pinned, bearer(es256_token(private, "k1")))
    finally:
        await pinned.close()
    assert message == "the token's algorithm does not match its signing key"


async def test_unusable_keys_are_skipped(
    jwks: JwksServer, jwks_auth: tuple[Authenticator, FakeClock]
) -> None:
    auth, _ = jwks_auth
    private, jwk = es256_key("k1")
    oct_key = {"kty": "oct", "kid": "k1", "k": b64url(SECRET.encode())}
    broken = {"kty": "EC", "kid": "broken"}
    jwks.keys = [oct_key, broken, "junk", {**jwk, "use": "enc"}, jwk]  # type: ignore[list-item]
    assert (await auth.authenticate(bearer(es256_token(private, "k1")))).subject == "alice"


async def test_jwks_endpoint_error(
    jwks: JwksServer, jwks_auth: tuple[Authenticator, FakeClock]
) -> None:
    auth, clock = jwks_auth
    private, jwk = es256_key("k1")
    jwks.keys, jwks.status = [jwk], 503
    token = bearer(es256_token(private, "k1"))
    assert await rejected(auth, token) == "the signing key set is unavailable"
    # Failing fast for a moment keeps a request burst from becoming a fetch burst.
    assert await rejected(auth, token) == "the signing key set is unavailable"
    assert jwks.hits == 1
    jwks.status = 200
    clock.now += 2
    assert (await auth.authenticate(token)).subject == "alice"


async def test_jwks_malformed_document(
    jwks: JwksServer, jwks_auth: tuple[Authenticator, FakeClock]
) -> None:
    auth, _ = jwks_auth
    private, _ = es256_key("k1")
    jwks.keys = "nope"  # type: ignore[assignment]
    message = await rejected(auth, bearer(es256_token(private, "k1")))
    assert message == "the signing key set is unavailable"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_jwks_endpoint_down() -> None:
    url = f"http://127.0.0.1:{closed_port()}/jwks.json"
    auth = Authenticator(AuthSettings(algorithms=("ES256",), jwks_url=url))
    private, _ = es256_key("k1")
    try:
        message = await rejected(auth, bearer(es256_token(private, "k1")))
    finally:
        await auth.close()
    assert message == "the signing key set is unavailable"


async def test_close_leaves_a_given_session_open(jwks: JwksServer) -> None:
    private, jwk = es256_key("k1")
    jwks.keys = [jwk]
    async with aiohttp.ClientSession() as session:
        auth = Authenticator(
            AuthSettings(algorithms=("ES256",), jwks_url=jwks.url), session=session
        )
        await auth.authenticate(bearer(es256_token(private, "k1")))
        await auth.close()
        assert not session.closed


# --- property: nothing but InvalidToken ever escapes --------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["admin", "tasks:read tasks:write", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
CLAIM_NAMES = st.sampled_from(["sub", "tenant", "scope", "exp", "nbf", "iat", "aud", "iss"])
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["HS256", "HS512", "RS256", "ES256", "none", "None", ""])
        | JSON_VALUES,
        "kid": JSON_VALUES,
        "crit": JSON_VALUES,
        "b64": JSON_VALUES,
    },
)


def signed_garbage(header: dict[str, Any], payload: dict[str, Any], sig: bytes) -> str:
    return hand_made(header, payload, sig)


def hs256_signed(payload: dict[str, Any]) -> str:
    return hs256_signed_with(SECRET.encode(), payload)


AUTHORIZATIONS = st.one_of(
    st.text(),
    st.text().map(lambda s: "Bearer " + s),
    st.builds(
        signed_garbage,
        HEADERS,
        st.dictionaries(CLAIM_NAMES, JSON_VALUES),
        st.binary(max_size=64),
    ).map(bearer),
    st.dictionaries(CLAIM_NAMES, JSON_VALUES).map(hs256_signed).map(bearer),
)


PROPERTY_SETTINGS = AuthSettings(
    jwt_secret=SECRET, algorithms=("HS256", "RS256"), public_key=RSA_PUBLIC_PEM
)


async def authenticate_or_refuse(authorization: str) -> None:
    try:
        principal = await Authenticator(PROPERTY_SETTINGS).authenticate(authorization)
    except InvalidToken:
        return
    assert principal.subject
    assert principal.tenant


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(authorization=AUTHORIZATIONS)
def test_only_invalid_token_escapes(authorization: str) -> None:
    asyncio.run(authenticate_or_refuse(authorization))
