"""Dashboard sessions and one-time sign-in links in Redis.

A session is stored under the SHA-256 of its cookie value, so reading Redis (a dump, a replica)
does not hand out live cookies. It expires by itself (``PX``); a lost Redis signs everyone out,
which is safe. A sign-in link carries a random ticket, not the token, and is taken with
``GETDEL``: a link works once, and only for ``ui.login_link_seconds``.
"""

from __future__ import annotations

import hashlib

import msgspec
import redis.asyncio as aioredis

from taskd.queue.client import _translated
from taskd.queue.keys import ui_login_ticket, ui_session


class StoredSession(msgspec.Struct, frozen=True, kw_only=True):
    token: str  # the bearer token it was opened with: checked again on every request
    csrf: str
    expires_at: float  # epoch seconds


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StoredSession)


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class SessionStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    @_translated
    async def put(self, cookie: str, session: StoredSession, ttl_ms: int) -> None:
        await self.client.set(ui_session(_digest(cookie)), _encoder.encode(session), px=ttl_ms)

    @_translated
    async def get(self, cookie: str) -> StoredSession | None:
        raw = await self.client.get(ui_session(_digest(cookie)))
        if raw is None:
            return None
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError:
            return None

    @_translated
    async def delete(self, cookie: str) -> None:
        await self.client.delete(ui_session(_digest(cookie)))

    @_translated
    async def put_ticket(self, ticket: str, token: str, ttl_ms: int) -> None:
        """Store a one-time sign-in link's token under the link's random ticket."""
        await self.client.set(ui_login_ticket(_digest(ticket)), token, px=ttl_ms)

    @_translated
    async def take_ticket(self, ticket: str) -> str | None:
        """The token of a sign-in link, once: GETDEL makes a second use find nothing."""
        found = await self.client.getdel(ui_login_ticket(_digest(ticket)))
        return None if found is None else str(found)
