"""Message rendering, pure: email subject and body, header sanitising, address validation.

Task fields reach email headers only through :func:`header_text` (no control or line-break
character survives, so nothing can end a header and start another) and recipients only through
:func:`validate_address` (a plain ``local@domain`` or nothing). Bodies are text after the
header block, where a line such as ``Bcc: x`` is just text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from taskd.errors import InvalidAddress

SUBJECT_MAX = 200
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?")
_SINGLE_LABEL = re.compile(_LABEL)
_SPACES = re.compile(r"\s+")
_MSGID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
EVENTS = {"SUCCESS": "task.succeeded", "FAILED": "task.failed"}


def _unsafe(ch: str) -> bool:
    """Control, format (bidi overrides, zero-width), separator-line/paragraph, surrogate,
    private-use and unassigned characters: none belongs in a header."""
    return unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")


def header_text(value: str, limit: int = SUBJECT_MAX) -> str:
    """``value`` made safe for a header: every control or line-break character becomes a
    space, runs of whitespace collapse, and the result is cut to ``limit`` characters."""
    cleaned = "".join(" " if _unsafe(ch) else ch for ch in value)
    cleaned = _SPACES.sub(" ", cleaned).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


def body_text(value: str) -> str:
    """Body text: line breaks normalised to ``\\n``; other control characters (tab aside)
    become spaces."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch if ch in "\n\t" or not _unsafe(ch) else " " for ch in value)


def validate_address(addr: str, *, allow_single_label: bool = False) -> str:
    """``addr`` if it is a plain ``local@domain`` address (ASCII dot-atoms, no display name,
    no comments, no quoting), else :class:`InvalidAddress`."""
    if not isinstance(addr, str) or len(addr) > 254:
        raise InvalidAddress(f"not an email address: {header_text(str(addr), 80)!r}")
    local, at, domain = addr.rpartition("@")
    domain_ok = _DOMAIN.fullmatch(domain) or (
        allow_single_label and _SINGLE_LABEL.fullmatch(domain)
    )
    if not at or len(local) > 64 or not _LOCAL.fullmatch(local) or not domain_ok:
        raise InvalidAddress(f"not an email address: {header_text(addr, 80)!r}")
    return addr


def subject(type_: str, status: str, task_id: str) -> str:
    """``[taskd] <type> <status> (<id>)``, each part sanitised."""
    parts = (header_text(type_, 128), header_text(status, 20), header_text(task_id, 64))
    return header_text(f"[taskd] {parts[0]} {parts[1]} ({parts[2]})")


@dataclass(frozen=True)
class TaskFacts:
    """What an email says about a task that ended."""

    id: str
    type: str
    queue: str
    status: str
    attempts: int
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    log_lines: Sequence[str] = ()


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="milliseconds") if value is not None else "-"


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = max((end - start).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.3f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def email_body(t: TaskFacts, log_lines: int = 20) -> str:
    """The plain-text body: the task's facts, its last error and the last lines of its log."""
    one = header_text  # single-line values stay on their line
    labels = ", ".join(f"{one(k, 63)}={one(v, 255)}" for k, v in sorted(t.labels.items()))
    rows = [
        ("id", t.id),
        ("type", t.type),
        ("queue", t.queue),
        ("status", t.status),
        ("attempts", str(t.attempts)),
        ("created", _time(t.created_at)),
        ("started", _time(t.started_at)),
        ("finished", _time(t.finished_at)),
        ("duration", duration(t.started_at, t.finished_at)),
        ("labels", labels or "-"),
    ]
    out = [f"Task {one(t.id, 64)} ({one(t.type, 128)}) ended {one(t.status, 20)}.", ""]
    out += [f"  {name + ':':<10} {one(value, 1000)}" for name, value in rows]
    out += ["", "Last error:"]
    if t.error_type or t.error_message:
        message = body_text(t.error_message or "")
        out.append(f"  {one(t.error_type or 'Error', 128)}: {message}")
    else:
        out.append("  -")
    tail = [line for entry in t.log_lines for line in body_text(entry).split("\n")]
    tail = tail[-log_lines:] if log_lines > 0 else []
    out += ["", f"Last {len(tail)} log lines:" if tail else "Log: (no lines)"]
    out += [f"  {line}" for line in tail]
    return "\n".join(out) + "\n"


def build_email(
    *,
    sender: str,
    to: Sequence[str],
    subject_line: str,
    body: str,
    message_id: str,
    date: datetime,
) -> EmailMessage:
    """A text/plain message. Addresses are validated and the subject sanitised here again, so
    no caller can put a header break into the message."""
    domain = validate_address(sender, allow_single_label=True).rpartition("@")[2]
    recipients = [validate_address(a) for a in to]
    if not recipients:
        raise InvalidAddress("no recipients")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = header_text(subject_line)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = f"<{_MSGID_UNSAFE.sub('', message_id)[:100] or 'taskd'}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body_text(body))
    return msg


def event_name(status: str) -> str:
    """The webhook event of API.md for a task's final status."""
    return EVENTS.get(status, "task." + status.lower())
