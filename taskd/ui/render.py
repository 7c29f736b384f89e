"""Jinja2 templates (autoescaped) and the filters they use."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

STATIC = resources.files("taskd.ui") / "static"
# A payload or result is shown up to this size; the raw download has all of it.
JSON_CAP = 64 * 1024


@cache
def static_version(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    return f"/ui/static/{name}?v={static_version(name)}"


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: datetime | float | None) -> str:
    if value is None:
        return "—"
    t = value.timestamp() if isinstance(value, datetime) else value
    return duration(datetime.now(UTC).timestamp() - t) + " ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = max(seconds, 0.0)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} d"


def between(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return duration((end - start).total_seconds())


def number(value: int) -> str:
    return f"{value:,}"


def pretty(value: Any) -> tuple[str, bool]:
    """Indented JSON, cut at JSON_CAP; returns (text, was_cut)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    if len(text) > JSON_CAP:
        return text[:JSON_CAP], True
    return text, False


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("taskd.ui", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        when=when, ago=ago, duration=duration, between=between, number=number, pretty=pretty
    )
    env.globals["static"] = static_url
    return env


def render_text(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)


def page(name: str, status: int = 200, **context: Any) -> web.Response:
    return web.Response(text=render_text(name, **context), status=status, content_type="text/html")
