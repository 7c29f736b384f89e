"""Authenticator's cache of verified tokens: reuse saves the work, never a check that matters.

A token is verified once and then recognised by its exact text; its times (exp, nbf, iat) are
checked on every use, and a token verified with a JWKS key is verified again once that key set
is refetched, so a withdrawn key stops working exactly when it would without the cache.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from taskd.api.auth import Authenticator, InvalidToken, mint_token
from taskd.config.settings import AuthSettings

SECRET = "x" * 32 + "y" * 32


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token that reaches signature verification."""
    seen: list[str] = []
    original = Authenticator._decode

    def counting(self: Authenticator, token: str, key: Any, alg: str) -> dict[str, Any]:
        seen.append(token)
        return original(self, token, key, alg)

    monkeypatch.setattr(Authenticator, "_decode", counting)
    return seen


async def test_a_token_is_verified_once_then_recognised(decodes: list[str]) -> None:
    auth = Authenticator(AuthSettings(jwt_secret=SECRET))
    token = mint_token(SECRET, "bob", tenant="acme", scopes=["tasks:write"])
    first = await auth.authenticate(f"Bearer {token}")
    for _ in range(3):
        assert await auth.authenticate(f"Bearer {token}") == first
    assert decodes == [token]
    other = mint_token(SECRET, "carol")
    assert (await auth.authenticate(f"Bearer {other}")).subject == "carol"
    assert decodes == [token, other]


async def test_a_recognised_token_still_expires() -> None:
    clock = Clock()
    auth = Authenticator(AuthSettings(jwt_secret=SECRET, leeway_seconds=5), clock=clock)
    token = mint_token(SECRET, "bob", ttl_seconds=60)
    await auth.authenticate(f"Bearer {token}")
    clock.now += 64  # within the leeway
    await auth.authenticate(f"Bearer {token}")
    clock.now += 2
    for _ in range(2):
        with pytest.raises(InvalidToken, match="token has expired"):
            await auth.authenticate(f"Bearer {token}")


async def test_a_token_not_yet_valid_is_not_kept(decodes: list[str]) -> None:
    clock = Clock()
    auth = Authenticator(AuthSettings(jwt_secret=SECRET), clock=clock)
    now = int(clock.now)
    token = jwt.encode({"sub": "bob", "nbf": now + 30, "exp": now + 600}, SECRET, "HS256")
    with pytest.raises(InvalidToken, match="not yet valid"):
        await auth.authenticate(f"Bearer {token}")
    clock.now += 31
    assert (await auth.authenticate(f"Bearer {token}")).subject == "bob"
    assert decodes == [token, token]


async def test_a_token_differing_in_one_character_is_verified_on_its_own() -> None:
    auth = Authenticator(AuthSettings(jwt_secret=SECRET))
    token = mint_token(SECRET, "bob")
    await auth.authenticate(f"Bearer {token}")
    head, body, signature = token.split(".")
    forged = ".".join((head, body, ("A" if signature[0] != "A" else "B") + signature[1:]))
    with pytest.raises(InvalidToken, match="signature"):
        await auth.authenticate(f"Bearer {forged}")


@dataclass
class Jwks:
    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0


@pytest.fixture
async def jwks() -> AsyncIterator[Jwks]:
    server = Jwks()

    async def handler(request: web.Request) -> web.Response:
        server.hits += 1
        return web.json_response({"keys": server.keys})

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/jwks.json"
    yield server
    await runner.cleanup()


async def test_a_withdrawn_jwks_key_stops_working_at_the_refetch(jwks: Jwks) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": "k1", "alg": "ES256"}
    jwks.keys = [jwk]
    clock = Clock()
    settings = AuthSettings(algorithms=("ES256",), jwks_url=jwks.url, jwks_cache_seconds=300)
    auth = Authenticator(settings, clock=clock)
    now = int(clock.now)
    claims = {"sub": "bob", "iat": now, "exp": now + 3600}
    token = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k1"})
    try:
        await auth.authenticate(f"Bearer {token}")
        jwks.keys = []  # the issuer withdraws the key
        clock.now += 299  # the key set is still fresh: the token stands, as it would uncached
        await auth.authenticate(f"Bearer {token}")
        assert jwks.hits == 1
        clock.now += 2  # the key set is due: refetched, and the token no longer verifies
        with pytest.raises(InvalidToken, match="no key"):
            await auth.authenticate(f"Bearer {token}")
        assert jwks.hits == 2
    finally:
        await auth.close()
