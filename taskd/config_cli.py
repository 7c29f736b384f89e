"""``taskd config show|check``: the effective configuration and where each value came from, and a
validator for a settings file.

``show`` reads the same sources a role process does (defaults < YAML < environment < SSM when
``ssm.prefix`` is set) and prints every setting with its source, secrets masked. ``check FILE``
validates one file over the defaults (``--env``: with this environment on top) and exits 0 when it
is valid, 2 with the problems when it is not.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from taskd.config.loader import env_overrides, read_yaml
from taskd.config.masking import mask_path
from taskd.config.reload import Sources, ssm_settings
from taskd.config.settings import Settings
from taskd.config.snapshot import LAYER_ORDER, Layer, Snapshot, compose, leaves, tree
from taskd.errors import ConfigError

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
_UNKNOWN = re.compile(r"unknown field `(?P<field>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taskd config", description=__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="print the effective configuration and each value's source")
    show.add_argument("--config", help="YAML settings file (default: $TASKD_CONFIG)")
    show.add_argument("--json", action="store_true", help="JSON: {path: {value, source}}")
    show.add_argument("--no-ssm", action="store_true", help="do not read SSM Parameter Store")
    check = sub.add_parser("check", help="validate a settings file (exit 0 valid, 2 invalid)")
    check.add_argument("file", help="YAML settings file")
    check.add_argument("--env", action="store_true", help="with TASKD_* variables on top")
    return p


def main(argv: Sequence[str], run: Runner) -> int:
    args = parser().parse_args(argv)
    if args.action == "check":
        return check(args.file, os.environ if args.env else {})
    return int(run(show(args)))


async def effective(sources: Sources, *, with_ssm: bool = True) -> Snapshot:
    """The snapshot a role process started now with ``sources`` would run with."""
    layers = sources.local_layers()
    ssm = ssm_settings(layers)
    if with_ssm and ssm.prefix:
        from taskd.config.ssm import SsmSource

        layers.append(Layer("ssm", await SsmSource(ssm).fetch()))
    return compose(layers)


async def show(args: argparse.Namespace) -> int:
    snapshot = await effective(
        Sources(path=args.config, environ=dict(os.environ)), with_ssm=not args.no_ssm
    )
    rows = [
        (path, mask_path(path, value), snapshot.source(path))
        for path, value in leaves(tree(snapshot.settings)).items()
    ]
    if args.json:
        doc = {path: {"value": value, "source": source} for path, value, source in rows}
        print(json.dumps(doc, indent=2))
        return 0
    shown = [(path, _encode(value), source) for path, value, source in rows]
    width = max(len(path) for path, _, _ in shown)
    vwidth = min(max(len(value) for _, value, _ in shown), 48)
    lines = [f"# effective configuration; sources: {' < '.join(LAYER_ORDER)}; secrets masked"]
    lines += [f"{path:<{width}}  {value:<{vwidth}}  {source}" for path, value, source in shown]
    print("\n".join(lines))
    return 0


def check(file: str, environ: dict[str, str] | os._Environ[str]) -> int:
    try:
        layers = [Layer("yaml", read_yaml(file))]
        if environ:
            layers.append(Layer("env", env_overrides(environ)))
        snapshot = compose(layers)
    except ConfigError as e:
        print(f"{file}: {e}{_hint(str(e))}", file=sys.stderr)
        return 2
    changed = [p for p, s in snapshot.sources.items() if s != "default"]
    print(f"{file}: valid ({len(changed)} settings set, every other one at its default)")
    return 0


def _hint(message: str) -> str:
    """For a misspelt key, the closest real one."""
    m = _UNKNOWN.search(message)
    if m is None:
        return ""
    known = _fields_at((m["at"] or "").lstrip(".").split(".") if m["at"] else [])
    close = difflib.get_close_matches(m["field"], known, n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _fields_at(path: list[str]) -> list[str]:
    node: Any = tree(Settings())
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return []
        node = node[part]
    return list(node) if isinstance(node, dict) else []


def _encode(value: Any) -> str:
    return msgspec.json.encode(value).decode()
