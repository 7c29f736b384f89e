"""Layered configuration snapshots: compose sources, say where each value came from, and settle a
reload against the running snapshot (DESIGN §7). Pure: no I/O, no asyncio.

Layers, lowest first: ``default`` < ``yaml`` < ``env`` < ``cli`` (command-line flags) < ``ssm``.
A layer is a nested mapping of the settings it sets; leaves are scalars or whole lists (a list is
replaced, never merged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from taskd.config.loader import build, merge
from taskd.config.settings import Settings, needs_restart

LAYER_ORDER = ("default", "yaml", "env", "cli", "ssm")


@dataclass(frozen=True)
class Layer:
    """One source's settings: ``name`` is one of LAYER_ORDER."""

    name: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """An effective configuration: the validated settings, and the source of every leaf."""

    settings: Settings
    sources: Mapping[str, str] = field(default_factory=dict)

    def source(self, path: str) -> str:
        return self.sources.get(path, "default")


@dataclass(frozen=True)
class Change:
    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Settled:
    """What a reload does: ``snapshot`` is the new effective configuration (the running one's
    restart-required values kept), ``applied`` the changes it takes effect with, ``pending`` the
    changes that wait for a restart."""

    snapshot: Snapshot
    applied: tuple[Change, ...]
    pending: tuple[Change, ...]


def tree(settings: Settings) -> dict[str, Any]:
    """The settings as nested builtins, as YAML would give them (lists, enums as values)."""
    out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(settings))
    return out


def leaves(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value for every leaf of a nested mapping."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(leaves(value, path + "."))
        else:
            out[path] = value
    return out


def defines(data: Mapping[str, Any], path: str) -> bool:
    """Whether a layer sets the leaf at ``path`` (itself, or a non-mapping value above it)."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return True
        if part not in node:
            return False
        node = node[part]
    return True


def compose(layers: Sequence[Layer]) -> Snapshot:
    """Merge the layers in order, validate the result, and name each leaf's source.

    Raises:
        ConfigError: the merged settings are invalid.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer.data)
    settings = build(merged)
    sources: dict[str, str] = {}
    for path in leaves(tree(settings)):
        sources[path] = next(
            (layer.name for layer in reversed(layers) if defines(layer.data, path)), "default"
        )
    return Snapshot(settings, sources)


def diff(old: Settings, new: Settings) -> tuple[Change, ...]:
    """The leaves whose values differ, in the settings' own order."""
    before, after = leaves(tree(old)), leaves(tree(new))
    return tuple(
        Change(path, before.get(path), value)
        for path, value in after.items()
        if before.get(path) != value
    )


def settle(current: Snapshot, candidate: Snapshot) -> Settled:
    """Take the runtime-tunable changes of ``candidate``; keep the running value of every
    setting that needs a restart (those changes are returned as ``pending``).

    Raises:
        ConfigError: the mix of new tunable values and kept values does not validate.
    """
    changes = diff(current.settings, candidate.settings)
    pending = tuple(c for c in changes if needs_restart(c.path))
    applied = tuple(c for c in changes if not needs_restart(c.path))
    if not pending:
        return Settled(candidate, applied, pending)
    data = tree(candidate.settings)
    sources = dict(candidate.sources)
    for change in pending:
        _set(data, change.path, change.old)
        sources[change.path] = current.source(change.path)
    return Settled(Snapshot(build(data), sources), applied, pending)


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
