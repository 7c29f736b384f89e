"""The dashboard's security model.

* **Who**: the same JWTs, scopes and tenants as the API. A person signs in by pasting a token,
  or with a one-time link from ``taskd token --ui``; the server then keeps a session in Redis
  and the browser holds only a random cookie (HttpOnly, SameSite=Strict, Path=/ui, Secure
  under TLS or when configured). The token is checked again on every request, so a session
  ends when its token expires, whatever the configured lifetime.
* **What**: ``tasks:read`` views, ``tasks:write`` acts (unless ``ui.read_only``), ``admin``
  sees every tenant; another tenant's task is a 404, as in the API.
* **Forgery**: every state change needs the session's CSRF token (form field ``csrf`` or
  header ``X-CSRF-Token``) and an ``Origin`` (or, failing that, ``Referer``) of this host.
  ``Referrer-Policy: same-origin`` keeps Chromium sending a real ``Origin`` on same-origin form
  posts (``no-referrer`` makes it ``null``, which is refused).
* **Injection**: templates autoescape; a strict CSP with no inline script or style anywhere
  (htmx runs with ``allowEval: false`` and without its inline indicator styles).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from taskd.api.auth import Authenticator, InvalidToken, Principal
from taskd.config.settings import UiSettings
from taskd.queue.sessions import SessionStore, StoredSession

COOKIE = "taskd_session"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class Refused(Exception):
    """A request the dashboard will not serve: ``status`` and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Viewer:
    """The signed-in person."""

    principal: Principal
    csrf: str
    can_act: bool  # holds tasks:write and the dashboard is not read-only

    @property
    def tenant(self) -> str | None:
        return self.principal.tenant_filter()


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every /ui response carries the CSP and its companions (pages, fragments, static files,
    errors and redirects alike)."""
    if request.path == "/ui" or request.path.startswith("/ui/"):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.path.startswith("/ui/static/"):
            response.headers.setdefault("Cache-Control", "no-store")


def same_origin(request: web.Request) -> bool:
    """Whether a state-changing request comes from a page of this host."""
    source = request.headers.get("Origin")
    if source is None or source == "null":
        source = request.headers.get("Referer")
    if not source:
        return False
    return urlsplit(source).netloc == request.host


class UiAuth:
    def __init__(self, settings: UiSettings, auth: Authenticator, sessions: SessionStore) -> None:
        self.settings = settings
        self.auth = auth
        self.sessions = sessions

    async def principal_of(self, token: str) -> tuple[Principal, float]:
        """The token's principal and expiry; Refused when it may not use the dashboard."""
        token = token.strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        try:
            principal = await self.auth.authenticate(f"Bearer {token}")
        except InvalidToken as e:
            raise Refused(401, f"That token was not accepted: {e}.") from e
        if not principal.allows("tasks:read"):
            raise Refused(403, "That token lacks the tasks:read scope the dashboard needs.")
        return principal, _expiry(token)

    async def sign_in(self, token: str) -> tuple[str, int]:
        """Open a session for ``token``; returns the cookie value and its lifetime (s)."""
        _, token_exp = await self.principal_of(token)
        now = time.time()
        expires = min(now + self.settings.session_seconds, token_exp)
        cookie = secrets.token_urlsafe(32)
        stored = StoredSession(
            token=token.strip(), csrf=secrets.token_urlsafe(32), expires_at=expires
        )
        ttl = max(int(expires - now), 1)
        await self.sessions.put(cookie, stored, ttl * 1000)
        return cookie, ttl

    async def viewer(self, request: web.Request) -> Viewer | None:
        """The signed-in person, or None (no cookie, unknown or ended session, expired token)."""
        cookie = request.cookies.get(COOKIE)
        if not cookie or len(cookie) > 128:
            return None
        stored = await self.sessions.get(cookie)
        if stored is None or stored.expires_at <= time.time():
            return None
        try:
            principal, _ = await self.principal_of(stored.token)
        except Refused:
            await self.sessions.delete(cookie)
            return None
        can_act = principal.allows("tasks:write") and not self.settings.read_only
        return Viewer(principal, stored.csrf, can_act)

    async def sign_out(self, request: web.Request) -> None:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            await self.sessions.delete(cookie)

    def set_cookie(
        self, request: web.Request, response: web.StreamResponse, cookie: str, ttl: int
    ) -> None:
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=ttl,
            path="/ui",
            httponly=True,
            samesite="Strict",
            secure=self.settings.cookie_secure or request.secure,
        )


def check_action(request: web.Request, viewer: Viewer, form_token: str | None) -> None:
    """Refuse a state change without this host's origin, the session's CSRF token, or the
    right to act."""
    if not same_origin(request):
        raise Refused(403, "Refused: the request did not come from this dashboard (Origin).")
    given = request.headers.get("X-CSRF-Token") or form_token or ""
    if not hmac.compare_digest(given.encode(), viewer.csrf.encode()):
        raise Refused(403, "Refused: the CSRF token is missing or wrong. Reload the page.")
    if not viewer.can_act:
        raise Refused(403, "This session may look but not act (tasks:write, or read-only mode).")


def _expiry(token: str) -> float:
    """The ``exp`` of a token that was just verified (so the claim is present and numeric)."""
    import jwt

    exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    return float(exp) if isinstance(exp, int | float) else time.time()
