"""Bearer-token authentication and tenancy for the ``/v1`` API (see API.md).

A token is a JWT. The algorithms we accept come only from configuration, never from the token:
the unverified header's ``alg`` is checked against that list before anything is verified, and
the key is chosen by algorithm family (HS* → the shared secret; RS*/PS*/ES*/EdDSA → the PEM
public key, or else the JWKS), so an attacker cannot make us verify an HMAC with a public key.

Every failure, whatever pyjwt, cryptography or aiohttp raised underneath, surfaces as
:class:`InvalidToken` with a short human message; the HTTP layer turns it into a 401.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidSubjectError
from jwt.types import Options

from taskd.config.settings import AuthSettings
from taskd.errors import ConfigError, TaskdError

__all__ = ["Authenticator", "InvalidToken", "Principal", "mint_token"]

log = logging.getLogger("taskd.api.auth")

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey
_PUBLIC_KEY_TYPES = (RSAPublicKey, EllipticCurvePublicKey, Ed25519PublicKey, Ed448PublicKey)

# Real tokens are well under 2 KiB; the cap bounds the parsing work an anonymous caller can cause.
MAX_TOKEN_LENGTH = 8 * 1024
# A forged or unknown ``kid`` may trigger a JWKS refetch, but no more often than this.
JWKS_REFETCH_INTERVAL = 10.0
# After a failed fetch, requests fail fast for this long instead of each retrying the endpoint.
JWKS_FAILURE_HOLD = 1.0
_JWKS_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
_KEY_SET_UNAVAILABLE = "the signing key set is unavailable"
_BAD_SUBJECT = "token subject is missing or malformed"
_ASYMMETRIC_KTY = frozenset({"RSA", "EC", "OKP"})
# Verified tokens kept per process; when full, the cache starts over (only valid tokens get in).
TOKEN_CACHE_SIZE = 4096


class InvalidToken(TaskdError):
    """The bearer token is missing, malformed, forged or expired."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller.

    Attributes:
        subject: The ``sub`` claim.
        tenant: The ``tenant`` claim, or the subject when the token has none.
        scopes: The space-separated ``scope`` claim, split.
    """

    subject: str
    tenant: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """Whether the caller holds the ``admin`` scope."""
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        """Whether the caller may act with ``scope``; ``admin`` allows everything."""
        return self.is_admin or scope in self.scopes

    def tenant_filter(self) -> str | None:
        """The tenant to restrict queries to, or None for an admin, who sees every tenant."""
        return None if self.is_admin else self.tenant


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token that passed every check, and until when that verification may be reused."""

    principal: Principal
    claims: Mapping[str, Any]  # exp, nbf and iat are checked again on every use
    until: float  # when the key set it was verified with is due for a refetch; inf otherwise


@dataclass(frozen=True)
class _JwksKey:
    kid: str | None
    alg: str | None  # the JWK's own "alg", when it pins one
    key: PublicKey


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`.

    A token that passed every check is remembered by its exact text, so a client's next
    requests skip parsing and signature verification; its times (``exp``, ``nbf``, ``iat``)
    are checked again on every use, and one verified with a JWKS key is verified afresh once
    that key set is due for a refetch (or was refetched), as it would be without the cache.

    Args:
        settings: The ``auth`` section of the configuration.
        session: The HTTP session for JWKS fetches; one is created on first use if not given.
        clock: Wall-clock seconds; governs ``exp``/``nbf``/``iat`` and the JWKS cache.

    Raises:
        ConfigError: ``algorithms`` names ``none`` or an unknown algorithm, or ``public_key``
            is not a PEM RSA, EC or EdDSA public key.
    """

    def __init__(
        self,
        settings: AuthSettings,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._algorithms = _checked_algorithms(settings.algorithms)
        self._public_key = _load_public_key(settings.public_key) if settings.public_key else None
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._jwks: tuple[_JwksKey, ...] | None = None
        self._jwks_fetched_at = -math.inf
        self._jwks_attempted_at = -math.inf
        self._jwks_failed = False
        # Serialises fetches so a burst of requests on a cold cache makes one request, not many.
        self._jwks_lock = asyncio.Lock()
        # Verified tokens by their raw text: a client sends one token many times, and parsing
        # and verifying it again cost ~18 % of the api's CPU under load (bench/README.md).
        self._verified: dict[str, _Verified] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """Verify a bearer token and return who presented it.

        Args:
            authorization: The raw ``Authorization`` header value, or None if absent.

        Returns:
            The caller's principal.

        Raises:
            InvalidToken: The header or token is missing, malformed, forged, expired, uses an
                algorithm that is not configured, or its key cannot be obtained.
        """
        token = _bearer_token(authorization)
        known = self._verified.get(token)
        now = self._clock()
        if known is not None and now < known.until:
            try:
                _check_times(known.claims, now, self._settings.leeway_seconds)
            except InvalidToken:
                self._verified.pop(token, None)
                raise
            return known.principal
        alg, kid = _unverified_alg_and_kid(token)
        if alg not in self._algorithms:
            raise InvalidToken("token algorithm is not accepted")
        key = await self._verification_key(alg, kid)
        claims = self._decode(token, key, alg)
        _check_times(claims, self._clock(), self._settings.leeway_seconds)
        principal = _principal(claims)
        self._remember(token, _Verified(principal, claims, self._reuse_until(alg)))
        return principal

    def _reuse_until(self, alg: str) -> float:
        """A key from configuration stays until restart; a JWKS key only until the set is due
        for a refetch (and the cache is cleared whenever a fetch replaces the set)."""
        if alg.startswith("HS") or self._public_key is not None:
            return math.inf
        return self._jwks_fetched_at + self._settings.jwks_cache_seconds

    def _remember(self, token: str, verified: _Verified) -> None:
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = verified

    async def close(self) -> None:
        """Close the HTTP session if this authenticator created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _verification_key(self, alg: str, kid: str | None) -> str | PublicKey:
        # The family decides the key, so a public key is never handed to HMAC (alg confusion).
        if alg.startswith("HS"):
            if not self._settings.jwt_secret:
                raise InvalidToken("HMAC tokens are not accepted: no shared secret is configured")
            return self._settings.jwt_secret
        if self._public_key is not None:
            return self._public_key
        if self._settings.jwks_url:
            return await self._jwks_key(alg, kid)
        raise InvalidToken("no public key is configured to verify this token")

    async def _jwks_key(self, alg: str, kid: str | None) -> PublicKey:
        found = _select_key(await self._key_set(unknown_kid=False), kid)
        if found is None and kid is not None:
            # The issuer may have rotated keys since we cached the set.
            found = _select_key(await self._key_set(unknown_kid=True), kid)
        if found is None:
            raise InvalidToken("no key in the signing key set matches the token")
        if found.alg is not None and found.alg != alg:
            raise InvalidToken("the token's algorithm does not match its signing key")
        return found.key

    async def _key_set(self, *, unknown_kid: bool) -> tuple[_JwksKey, ...]:
        async with self._jwks_lock:
            now = self._clock()
            since_attempt = now - self._jwks_attempted_at
            if unknown_kid and since_attempt < JWKS_REFETCH_INTERVAL:
                # Also covers a burst of one new kid: the first request refetched, the rest reuse.
                return self._jwks or ()
            fresh = now - self._jwks_fetched_at < self._settings.jwks_cache_seconds
            if not unknown_kid and self._jwks is not None and fresh:
                return self._jwks
            if self._jwks_failed and since_attempt < JWKS_FAILURE_HOLD:
                raise InvalidToken(_KEY_SET_UNAVAILABLE)
            self._jwks_attempted_at = now
            self._jwks_failed = True  # stays set if the fetch raises or is cancelled
            keys = await self._fetch_jwks()
            self._jwks, self._jwks_fetched_at, self._jwks_failed = keys, now, False
            self._verified.clear()  # a key may have been withdrawn: verify every token again
            return keys

    async def _fetch_jwks(self) -> tuple[_JwksKey, ...]:
        # aiohttp rather than jwt.PyJWKClient, whose urllib I/O would block the event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = self._settings.jwks_url
        try:
            async with self._session.get(url, timeout=_JWKS_TIMEOUT) as response:
                if response.status != 200:
                    log.warning("JWKS fetch from %s answered HTTP %d", url, response.status)
                    raise InvalidToken(_KEY_SET_UNAVAILABLE)
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("JWKS fetch from %s failed: %r", url, e)
            raise InvalidToken(_KEY_SET_UNAVAILABLE) from e
        return _parse_jwks(document)

    def _decode(self, token: str, key: str | PublicKey, alg: str) -> dict[str, Any]:
        audience = self._settings.audience or None
        issuer = self._settings.issuer or None
        options: Options = {
            "require": ["exp"],
            # Times are checked against our injectable clock in _check_times.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": audience is not None,
            "verify_iss": issuer is not None,
        }
        try:
            # ``alg`` was already checked against the configured list and the key matches its
            # family, so a one-element list is exactly as strict as the whole configured one.
            return jwt.decode(
                token, key, algorithms=[alg], options=options, audience=audience, issuer=issuer
            )
        except Exception as e:
            # pyjwt and cryptography raise a wide, version-dependent set of types (PyJWTError,
            # ValueError, TypeError, UnsupportedAlgorithm, ...); all of them mean "not valid".
            raise InvalidToken(_decode_failure_message(e)) from e


def mint_token(
    secret: str,
    subject: str,
    *,
    tenant: str | None = None,
    scopes: Iterable[str] = ("tasks:read", "tasks:write"),
    ttl_seconds: float = 3600,
    audience: str | None = None,
    issuer: str | None = None,
    algorithm: str = "HS256",
) -> str:
    """Sign a token that :class:`Authenticator` accepts; for local use, tests and the CLI.

    Args:
        secret: The HS* shared secret, or a PEM private key for RS*/PS*/ES*/EdDSA.
        subject: The ``sub`` claim.
        tenant: The ``tenant`` claim; omitted when None, so the tenant is the subject.
        scopes: Joined with spaces into the ``scope`` claim.
        ttl_seconds: Lifetime from now; negative values mint an already expired token.
        audience: The ``aud`` claim, if any.
        issuer: The ``iss`` claim, if any.
        algorithm: The signing algorithm.

    Returns:
        The compact JWT.

    Raises:
        ValueError: ``algorithm`` is ``none``.
    """
    if algorithm.lower() == "none":
        raise ValueError("refusing to mint an unsigned token")
    now = time.time()
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": int(now),
        "exp": int(now + ttl_seconds),
        "scope": " ".join(scopes),
    }
    optional = {"tenant": tenant, "aud": audience, "iss": issuer}
    claims.update({name: value for name, value in optional.items() if value is not None})
    return jwt.encode(claims, secret, algorithm=algorithm)


def _checked_algorithms(configured: Sequence[str]) -> frozenset[str]:
    known = get_default_algorithms()
    for alg in configured:
        if alg.lower() == "none":
            raise ConfigError("auth.algorithms must not contain 'none'")
        if alg not in known:
            raise ConfigError(f"auth.algorithms: unknown algorithm {alg!r}")
    return frozenset(configured)


def _load_public_key(pem: str) -> PublicKey:
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ConfigError(f"auth.public_key is not a PEM public key: {e}") from e
    if not isinstance(key, _PUBLIC_KEY_TYPES):
        raise ConfigError("auth.public_key must be an RSA, EC, Ed25519 or Ed448 key")
    return key


def _bearer_token(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise InvalidToken("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidToken("authorization scheme must be Bearer")
    token = token.strip()
    if not token:
        raise InvalidToken("missing bearer token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token is too long")
    # A JWT is ASCII; this also keeps surrogates (aiohttp's surrogateescape) out of pyjwt.
    if not token.isascii():
        raise InvalidToken("token is malformed")
    return token


def _unverified_alg_and_kid(token: str) -> tuple[str, str | None]:
    try:
        header = jwt.get_unverified_header(token)
    except Exception as e:
        # Same reasoning as in Authenticator._decode: any parse failure is a malformed token.
        raise InvalidToken("token is malformed") from e
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str):
        raise InvalidToken("token algorithm is not accepted")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("token key id is malformed")
    return alg, kid


def _decode_failure_message(error: Exception) -> str:
    if isinstance(error, jwt.InvalidSignatureError):
        return "token signature is invalid"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token has no {error.claim} claim"
    if isinstance(error, InvalidSubjectError):
        return _BAD_SUBJECT
    if isinstance(error, jwt.InvalidAudienceError):
        return "token audience is not accepted"
    if isinstance(error, jwt.InvalidIssuerError):
        return "token issuer is not accepted"
    return "token is malformed or cannot be verified"


def _parse_jwks(document: object) -> tuple[_JwksKey, ...]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        log.warning("JWKS document has no 'keys' list")
        raise InvalidToken(_KEY_SET_UNAVAILABLE)
    keys = []
    for entry in document["keys"]:
        key = _parse_jwk(entry)
        if key is not None:
            keys.append(key)
    return tuple(keys)


def _parse_jwk(entry: object) -> _JwksKey | None:
    # Unusable entries are skipped, not fatal: one odd key must not take down the others.
    if not isinstance(entry, dict) or entry.get("kty") not in _ASYMMETRIC_KTY:
        return None  # symmetric "oct" keys in a public set would reopen alg confusion
    if entry.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(entry).key
    except Exception as e:
        log.warning("skipping unusable JWK %r: %s", entry.get("kid"), e)
        return None
    if not isinstance(key, _PUBLIC_KEY_TYPES):
        return None  # a private JWK published by mistake; never verify with it
    kid, alg = entry.get("kid"), entry.get("alg")
    return _JwksKey(
        kid=kid if isinstance(kid, str) else None,
        alg=alg if isinstance(alg, str) else None,
        key=key,
    )


def _select_key(keys: Sequence[_JwksKey], kid: str | None) -> _JwksKey | None:
    if kid is None:
        # Without a kid only an unambiguous single-key set can be used.
        return keys[0] if len(keys) == 1 else None
    return next((key for key in keys if key.kid == kid), None)


def _numeric_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int subclass; a huge int is fine but math.isfinite() would overflow on it.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"token claim {name} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidToken(f"token claim {name} is not a number")
    return value


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    exp = _numeric_claim(claims, "exp")
    if exp is None:
        raise InvalidToken("token has no exp claim")
    if exp <= now - leeway:
        raise InvalidToken("token has expired")
    nbf = _numeric_claim(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise InvalidToken("token is not yet valid")
    iat = _numeric_claim(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise InvalidToken("token was issued in the future")


def _principal(claims: Mapping[str, Any]) -> Principal:
    subject = claims.get("sub")
    # NUL cannot be stored in Postgres text: a tenant or subject holding one would reach the
    # database and fail there (a 500) instead of being refused here (a 401).
    if not isinstance(subject, str) or not subject or "\x00" in subject:
        raise InvalidToken(_BAD_SUBJECT)
    tenant = claims.get("tenant", subject)
    if not isinstance(tenant, str) or not tenant or "\x00" in tenant:
        raise InvalidToken("token tenant is malformed")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise InvalidToken("token scope is malformed")
    return Principal(subject=subject, tenant=tenant, scopes=frozenset(scope.split()))
