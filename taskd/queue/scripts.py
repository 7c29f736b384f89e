"""The Lua scripts, loaded once from ``lua/*.lua`` and called by SHA.

redis-py's ``Script`` objects run EVALSHA and fall back to loading the script on NOSCRIPT, so a
``SCRIPT FLUSH`` or a Redis restart is transparent. A line ``--#include <name>`` is replaced by
``lua/<name>.lua``: Redis scripts cannot call each other, and the hand-off logic is shared by
several of them.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

NAMES = ("enqueue", "lease", "extend", "ack", "retry", "reap", "stats", "cancel", "retire")


def read_source(name: str) -> str:
    text = (resources.files("taskd.queue") / "lua" / f"{name}.lua").read_text()
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("--#include "):
            lines[i] = read_source(line.removeprefix("--#include ").strip())
    return "".join(lines)


class Scripts:
    """One registered script object per verb."""

    def __init__(self, client: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(read_source(name)) for name in NAMES
        }

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)
