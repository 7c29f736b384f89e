"""``taskd schedules list|show|trigger``: look at schedules and run one now, through the API.

A schedule is named by its id or by its name (the caller's tenant; an admin token sees every
tenant, so a name used by two tenants needs the id).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from taskd.config import Settings


class CliError(Exception):
    """A message for the operator, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def setup(p: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", help="API base URL (default: from api.host/api.port)")
    common.add_argument(
        "--token", help="bearer token (default: $TASKD_TOKEN or a minted dev token)"
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", parents=[common], help="list schedules, newest first")
    ls.add_argument("--name", help="only the schedule with this name")
    ls.add_argument("--limit", type=int, default=100)
    show = sub.add_parser(
        "show", parents=[common], help="a schedule, its next fires and its latest fires"
    )
    show.add_argument("schedule", help="id or name")
    show.add_argument("--fires", type=int, default=10, help="how many latest fires to show")
    trigger = sub.add_parser("trigger", parents=[common], help="run a schedule now")
    trigger.add_argument("schedule", help="id or name")


async def main(settings: Settings, args: argparse.Namespace) -> int:
    base = args.api or f"http://{settings.api.host}:{settings.api.port}"
    api = _Api(base, _bearer(settings, args))
    try:
        async with aiohttp.ClientSession() as http:
            api.http = http
            if args.action == "list":
                return await _list(api, args)
            if args.action == "show":
                return await _show(api, args)
            return await _trigger(api, args)
    except CliError as e:
        print(f"taskd schedules: {e}", file=sys.stderr)
        return e.status
    except aiohttp.ClientError as e:
        print(f"taskd: cannot reach the API at {base}: {e}", file=sys.stderr)
        return 3


def _bearer(settings: Settings, args: argparse.Namespace) -> str:
    from taskd.api.auth import mint_token

    secret = settings.auth.jwt_secret
    return (
        args.token or os.environ.get("TASKD_TOKEN") or (mint_token(secret, "cli") if secret else "")
    )


class _Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.http: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str) -> Any:
        assert self.http is not None
        async with self.http.request(method, self.base + path, headers=self.headers) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise CliError(f"{method} {path}: {resp.status} {_message(text)}")
            return json.loads(text)

    async def resolve(self, ref: str) -> str:
        """A schedule id from an id or a name."""
        try:
            return str(uuid.UUID(ref))
        except ValueError:
            pass
        page = await self.call("GET", f"/v1/schedules?name={quote(ref, safe='')}&limit=2")
        items = page["items"]
        if not items:
            raise CliError(f"no schedule named {ref!r}")
        if len(items) > 1:
            raise CliError(f"{len(items)} schedules are named {ref!r} (tenants differ): use the id")
        return str(items[0]["id"])


def _message(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text[:200]


def _timing(s: dict[str, Any]) -> str:
    what = f"cron {s['cron']}" if s["cron"] else f"every {s['every']:g}s"
    return f"{what} ({s['timezone']})"


async def _list(api: _Api, args: argparse.Namespace) -> int:
    query = f"?limit={args.limit}" + (f"&name={quote(args.name, safe='')}" if args.name else "")
    page = await api.call("GET", f"/v1/schedules{query}")
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    rows = [("ID", "NAME", "WHEN", "NEXT FIRE", "STATE")]
    for s in page["items"]:
        state = "paused" if s["paused"] else "active"
        rows.append(
            (s["id"], s["name"], _timing(s), s["next_fire_at"] or "-", f"{state}/{s['source']}")
        )
    print(_table(rows))
    return 0


async def _show(api: _Api, args: argparse.Namespace) -> int:
    sid = await api.resolve(args.schedule)
    s = await api.call("GET", f"/v1/schedules/{sid}")
    fires = await api.call("GET", f"/v1/schedules/{sid}/fires?limit={max(args.fires, 1)}")
    if args.json:
        print(json.dumps({"schedule": s, "fires": fires["items"]}, indent=2))
        return 0
    task = s["task"]
    lines = [
        f"{s['name']}  ({s['id']}, {s['source']}{', paused' if s['paused'] else ''})",
        f"  when:     {_timing(s)}",
        f"  task:     {task['type']} on queue {task.get('queue', 'default')}",
        f"  policy:   overlap {s['overlap']}, catch-up {s['catchup']} "
        f"(window {s['catchup_window']:g}s, at most {s['max_catchup_runs']}), "
        f"jitter {s['jitter']:g}s",
        "  next:     " + (", ".join(s["next_fires"]) or "-"),
        "",
    ]
    rows = [("INSTANT", "OUTCOME", "TASK")]
    rows += [(f["instant"], f["outcome"], f["task_id"] or "-") for f in fires["items"]]
    print("\n".join(lines) + _table(rows))
    return 0


async def _trigger(api: _Api, args: argparse.Namespace) -> int:
    sid = await api.resolve(args.schedule)
    fire = await api.call("POST", f"/v1/schedules/{sid}/trigger")
    print(json.dumps(fire, indent=2) if args.json else f"triggered: task {fire['task_id']}")
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
