"""Live pages: one poller per api process feeds Server-Sent Events to every open page.

Each open page subscribes to one topic (``overview``, ``task:<id>`` or ``dag:<id>``). Every
tick the hub asks Postgres in one query which watched tasks and DAGs changed, re-renders each
changed topic once per audience (tenant, may act) — never once per browser — and queues the
HTML on the streams whose last message differs. Unchanged topics are re-rendered every
``REFRESH_TICKS`` ticks anyway, since "why is it not running?" also depends on Redis.

Pages close their stream while the tab is hidden (static/app.js). At shutdown ``close()`` ends
every stream at once, so SIGTERM is not held up by open pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from taskd.errors import DependencyUnavailable
from taskd.ui.security import Viewer

log = logging.getLogger("taskd.ui.live")

REFRESH_TICKS = 5
KEEPALIVE_SECONDS = 15.0
QUEUE_DEPTH = 4  # a slow browser misses intermediate states, never the latest one

Audience = tuple[str, str | None, bool]  # topic, tenant filter, may act
Render = Callable[[Audience], Awaitable[str | None]]
Versions = Callable[[list[str]], Awaitable[dict[str, Any]]]


@dataclass(eq=False)
class Stream:
    viewer: Viewer
    topic: str
    queue: asyncio.Queue[str | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_DEPTH)
    )
    last: str | None = None

    @property
    def audience(self) -> Audience:
        return (self.topic, self.viewer.tenant, self.viewer.can_act)

    @property
    def event(self) -> str:
        return self.topic.split(":", 1)[0]

    def offer(self, html: str | None) -> None:
        if html is not None and html == self.last:
            return
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(html)
        self.last = html


@dataclass
class LiveHub:
    render: Render
    versions: Versions
    interval: float
    streams: set[Stream] = field(default_factory=set)
    closed: bool = False
    _seen: dict[str, Any] = field(default_factory=dict)
    _tick: int = 0

    def subscribe(self, viewer: Viewer, topic: str) -> Stream:
        stream = Stream(viewer, topic)
        self.streams.add(stream)
        return stream

    def unsubscribe(self, stream: Stream) -> None:
        self.streams.discard(stream)

    def close(self) -> None:
        """End every stream now (shutdown)."""
        self.closed = True
        for s in list(self.streams):
            s.last = None
            s.offer(None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.streams:
                continue
            try:
                await self.tick()
            except DependencyUnavailable as e:
                log.warning("live pages paused: %s", e)
            except Exception:
                log.exception("live pages: tick failed")

    async def tick(self) -> None:
        """One pass: render what changed, once per audience, and offer it to the streams."""
        self._tick += 1
        streams = list(self.streams)
        topics = sorted({s.topic for s in streams})
        versions = await self.versions(topics)
        due = {
            t
            for t in topics
            if t not in self._seen
            or versions.get(t) is None
            or versions.get(t) != self._seen[t]
            or self._tick % REFRESH_TICKS == 0
        }
        self._seen = {t: versions.get(t) for t in topics}
        rendered: dict[Audience, str | None] = {}
        for s in streams:
            if s.topic not in due and s.last is not None:  # new streams get one at once
                continue
            if s.audience not in rendered:
                rendered[s.audience] = await self.render(s.audience)
            html = rendered[s.audience]
            if html is not None:
                s.offer(html)


def _event(name: str, html: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{lines}\n".encode()


async def serve_stream(request: web.Request, hub: LiveHub, stream: Stream) -> web.StreamResponse:
    """Send the stream's messages as Server-Sent Events until the page or the hub closes it."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await response.prepare(request)
        await response.write(b"retry: 3000\n\n")
        while not hub.closed:
            try:
                html = await asyncio.wait_for(stream.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if html is None:
                break
            await response.write(_event(stream.event, html))
    except (ConnectionError, RuntimeError):
        pass  # the page went away
    finally:
        hub.unsubscribe(stream)
    return response
