"""Built-in task types that need no code: ``email.send`` and ``http.request`` (API.md, Handlers).

They reuse the notifier's channels and rules: the same SMTP settings (``notify.smtp``), address
validation and header sanitising, and the same outbound policy for HTTP (``notify.webhook.allow``:
private, loopback, link-local and metadata addresses refused after DNS resolution, no redirects).
Every worker serves them; a handler module that registers one of these names replaces it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from taskd.config.settings import NotifySettings
from taskd.errors import DeliveryFailed, DeliveryRefused, NonRetryableError
from taskd.notify import render
from taskd.notify.email import EmailChannel
from taskd.notify.webhook import DestinationPolicy, HttpClient
from taskd.registry import HandlerSpec, Registry, TaskContext

_METHOD = re.compile(r"^[A-Z]{1,16}$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Answers worth another attempt; any other non-2xx fails the task at once.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class EmailPayload(msgspec.Struct, forbid_unknown_fields=True):
    to: Annotated[list[str], Meta(min_length=1, max_length=50)] | str
    subject: Annotated[str, Meta(max_length=998)]
    text: str = ""


class HttpPayload(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, Meta(max_length=2048)]
    method: str = "GET"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    json: Any = msgspec.UNSET  # sent as application/json when present
    body: str | None = None  # sent as is (exclusive with json)
    timeout: Annotated[float, Meta(gt=0, le=300)] = 30.0


class Builtins:
    """The built-in handlers bound to one configuration; ``settings`` may be replaced whole."""

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self.http = HttpClient(DestinationPolicy(settings.webhook.allow))

    def retune(self, settings: NotifySettings) -> None:
        """Apply a reloaded ``notify`` section."""
        self.settings = settings
        self.http.policy = DestinationPolicy(settings.webhook.allow)

    def registry(self) -> Registry:
        reg = Registry()
        reg.add(HandlerSpec("email.send", self.send_email, 60.0, 5, EmailPayload))
        reg.add(HandlerSpec("http.request", self.http_request, 60.0, 3, HttpPayload))
        return reg

    async def close(self) -> None:
        await self.http.close()

    async def send_email(self, ctx: TaskContext, payload: EmailPayload) -> dict[str, Any]:
        """Send ``text`` to ``to`` with ``subject`` from ``notify.smtp.sender``. The Message-ID
        is the task id on every attempt, so a retried send can be recognised."""
        s = self.settings
        to = [payload.to] if isinstance(payload.to, str) else payload.to
        try:
            message = render.build_email(
                sender=s.smtp.sender,
                to=to,
                subject_line=payload.subject,
                body=payload.text,
                message_id=f"{ctx.task_id}.email-send",
                date=datetime.now(UTC),
            )
            await EmailChannel(s.smtp).send(message, to)
        except DeliveryRefused as e:
            raise NonRetryableError(str(e)) from e
        ctx.log(f"sent to {len(to)} recipient(s)")
        return {"sent": True, "to": to, "message_id": str(message["Message-ID"])}

    async def http_request(self, ctx: TaskContext, payload: HttpPayload) -> dict[str, Any]:
        """Make one HTTP request; 2xx succeeds, 408/425/429/5xx and connection errors are
        retried, any other answer fails the task."""
        method = payload.method.upper()
        if not _METHOD.match(method):
            raise NonRetryableError(f"not an HTTP method: {payload.method!r}")
        headers, body = _request_parts(payload)
        try:
            resp = await self.http.request(
                method, payload.url, headers=headers, body=body, time_limit=payload.timeout
            )
        except DeliveryRefused as e:
            raise NonRetryableError(str(e)) from e
        except DeliveryFailed:
            raise  # retried with the task's backoff
        ctx.log(f"{method} answered {resp.status}")
        if resp.status in _RETRYABLE_STATUS:
            raise RuntimeError(f"HTTP {resp.status} from {payload.url}")
        if not 200 <= resp.status < 300:
            raise NonRetryableError(f"HTTP {resp.status} from {payload.url}")
        return {
            "status": resp.status,
            "headers": resp.headers,
            "body": resp.body.decode("utf-8", errors="replace"),
        }


def _request_parts(payload: HttpPayload) -> tuple[dict[str, str], bytes | None]:
    headers: dict[str, str] = {}
    for name, value in payload.headers.items():
        if not _TOKEN.match(name) or any(c in value for c in "\r\n\x00"):
            raise NonRetryableError(f"invalid header {render.header_text(name, 60)!r}")
        headers[name] = value
    if payload.json is not msgspec.UNSET and payload.body is not None:
        raise NonRetryableError("give json or body, not both")
    if payload.json is not msgspec.UNSET:
        headers.setdefault("Content-Type", "application/json")
        return headers, msgspec.json.encode(payload.json)
    return headers, None if payload.body is None else payload.body.encode()


def with_builtins(registry: Registry, builtins: Builtins) -> Registry:
    """``registry`` plus the built-ins whose names it does not register itself."""
    merged = Registry()
    own = builtins.registry()
    for name in own.names():
        spec = own.get(name)
        if spec is not None and registry.get(name) is None:
            merged.add(spec)
    merged.merge(registry)
    return merged
