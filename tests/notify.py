"""Real notification endpoints for tests: an SMTP server (aiosmtpd) and an HTTP receiver
(aiohttp), both on loopback and free ports, both recording what they receive."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from taskd.registry import TaskContext
from taskd.store.tasks import AttemptOutcome, RunDefaults, TaskStore
from tests.helpers import new_task

# The Standard Webhooks example secret: its key is the base64 after the prefix.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data, policy=default_policy)


class SmtpSink:
    """aiosmtpd in its own thread; every message is kept and wakes the test's event loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mails: list[Mail] = []
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        mail = Mail(str(envelope.mail_from), list(envelope.rcpt_tos), envelope.content)
        self._loop.call_soon_threadsafe(self._add, mail)
        return "250 Message accepted for delivery"

    def _add(self, mail: Mail) -> None:
        self.mails.append(mail)
        self._arrived.set()

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[Mail]:
        """Wait until at least ``n`` messages have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.mails) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.mails

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes
    received_at: float

    @property
    def doc(self) -> Any:
        import json

        return json.loads(self.body)

    def verifies(self, key: bytes = KEY) -> bool:
        """The Standard Webhooks check, written here independently of taskd's signing code."""
        msg_id, stamp = self.headers["webhook-id"], self.headers["webhook-timestamp"]
        signed = f"{msg_id}.{stamp}.".encode() + self.body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        sigs = [s.removeprefix("v1,") for s in self.headers["webhook-signature"].split()]
        return any(hmac.compare_digest(expected, s) for s in sigs)


@dataclass
class Receiver:
    """An HTTP endpoint at ``url``. ``statuses`` are answered first, then 200; while ``hold``
    is set, requests wait (after being recorded) until ``release`` is called."""

    port: int = field(default_factory=free_port)
    statuses: list[int] = field(default_factory=list)
    hold: bool = False
    hooks: list[Hook] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._arrived = asyncio.Event()
        self._gate = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        loop = asyncio.get_running_loop()
        self.hooks.append(Hook(dict(request.headers.items()), body, loop.time()))
        self._arrived.set()
        if self.hold:
            await self._gate.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status < 300 else "no")

    def release(self) -> None:
        self.hold = False
        self._gate.set()

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[Hook]:
        async with asyncio.timeout(timeout):
            while len(self.hooks) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.hooks

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        app.router.add_get("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self._gate.set()
        if self._runner is not None:
            await self._runner.cleanup()


async def finish(
    store: TaskStore,
    queue: str,
    type_: str,
    status: str,
    *,
    notify: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    log: Iterable[str] = (),
    result: Any = None,
) -> str:
    """Insert a task and record its one attempt's outcome with the real statements (no worker:
    the store's flip and fenced completion are what a worker runs)."""
    from dataclasses import replace

    task = replace(new_task(queue, type_, max_retries=0), notify=notify, labels=labels or {})
    [row] = await store.insert([task])
    tid = str(row["id"])
    await store.flip_running(
        [tid], [f"tok-{uuid.uuid4().hex}"], "w1", RunDefaults([], [], [], 0, 300)
    )
    outcome = "SUCCESS" if status == "SUCCESS" else "ERROR"
    await store.complete(
        [AttemptOutcome(tid, 1, status, outcome, result=result, error=error, log=tuple(log))]
    )
    return tid


async def outbox(store: TaskStore) -> list[Any]:
    return list(await store.pool.fetch("SELECT * FROM notify_outbox ORDER BY id"))


async def delivery_attempts(store: TaskStore, outbox_id: int) -> list[Any]:
    return list(
        await store.pool.fetch(
            "SELECT * FROM notify_attempts WHERE outbox_id = $1 ORDER BY attempt", outbox_id
        )
    )


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def noop(ctx: TaskContext, payload: Any) -> None:
    return None
