"""Load named SQL blocks from ``sql/*.sql``: repositories never format SQL."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a file into ``{name: statement}`` at each ``-- name: <name>`` line."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = body.strip().rstrip(";").strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = statement
    return queries


@cache
def load(filename: str) -> dict[str, str]:
    return parse((resources.files("taskd.store") / "sql" / filename).read_text())
