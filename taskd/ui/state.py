"""What the dashboard's handlers share, stored on the /ui sub-application."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from taskd.api.context import ApiContext
from taskd.queue.presence import WorkerPresence
from taskd.store.dags import DagStore
from taskd.store.ui import UiStore
from taskd.ui.security import Refused, UiAuth, Viewer

if TYPE_CHECKING:
    from taskd.ui.live import LiveHub


@dataclass
class Pacer:
    """Paces bulk changes (redrives) to ``per_second`` per api process: a token bucket."""

    per_second: float
    _available: float = 0.0
    _at: float = field(default_factory=time.monotonic)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def take(self, n: int = 1) -> None:
        async with self._lock:
            now = time.monotonic()
            burst = self.per_second  # at most one second's worth at once
            self._available = min(burst, self._available + (now - self._at) * self.per_second)
            self._at = now
            self._available -= n
            if self._available < 0:
                await asyncio.sleep(-self._available / self.per_second)


T = TypeVar("T")


@dataclass
class Cache:
    """Expensive overview figures, recomputed at most every ``ttl`` seconds per key."""

    entries: dict[Any, tuple[float, Any]] = field(default_factory=dict)

    async def get(self, key: Any, ttl: float, compute: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        hit = self.entries.get(key)
        if hit is not None and hit[0] > now:
            value: T = hit[1]
            return value
        value = await compute()
        self.entries[key] = (now + ttl, value)
        return value


@dataclass
class UiState:
    api: ApiContext
    auth: UiAuth
    store: UiStore
    dags: DagStore
    presence: WorkerPresence
    pacer: Pacer
    hub: LiveHub
    cache: Cache = field(default_factory=Cache)
    # Overview sparklines per tenant filter (taskd.ui.models.Sparks).
    sparks: dict[str | None, Any] = field(default_factory=dict)


UI = web.AppKey("taskd_ui", UiState)
VIEWER = web.RequestKey("taskd_viewer", Viewer)


def state(request: web.Request) -> UiState:
    return request.config_dict[UI]


def viewer(request: web.Request) -> Viewer:
    """The signed-in person (the UI middleware has put them on the request)."""
    if VIEWER not in request:
        raise Refused(401, "Sign in first.")
    return request[VIEWER]
