"""The ``taskd`` sub-commands other than running roles."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aiohttp

from taskd import dlq_cli, schedules_cli
from taskd.config import Settings, load_settings
from taskd.errors import DependencyUnavailable

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def dispatch(name: str, argv: Sequence[str], run: Runner) -> int:
    parser = argparse.ArgumentParser(prog=f"taskd {name}")
    parser.add_argument("--config", help="YAML settings file (default: $TASKD_CONFIG)")
    setup, action = COMMANDS[name]
    setup(parser)
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    return int(run(action(settings, args)))


def _migrate_args(p: argparse.ArgumentParser) -> None:
    pass


async def migrate(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    from taskd.store.migrate import migrate as apply
    from taskd.store.pool import CONNECTION_ERRORS

    try:
        conn = await asyncpg.connect(
            settings.database.url, timeout=settings.database.connect_timeout
        )
    except CONNECTION_ERRORS as e:
        raise DependencyUnavailable(
            f"PostgreSQL at {_safe(settings.database.url)} is unreachable: {e}"
        ) from e
    except asyncpg.InvalidCatalogNameError:
        await _create_database(settings.database.url)
        conn = await asyncpg.connect(settings.database.url)
    try:
        applied = await apply(conn)
    finally:
        await conn.close()
    print(f"migrations applied: {applied or 'none (up to date)'}")
    return 0


async def _create_database(url: str) -> None:
    """A fresh machine has no ``taskd`` database yet: create it (local convenience)."""
    import asyncpg

    base, _, name = url.rpartition("/")
    name = name.split("?")[0]
    conn = await asyncpg.connect(f"{base}/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _safe(url: str) -> str:
    """The URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.split(':')[0]}@{tail}"


def _check_args(p: argparse.ArgumentParser) -> None:
    pass


async def check(settings: Settings, args: argparse.Namespace) -> int:
    """Preflight for `make run`: say which dependency is down and how to start it."""
    import asyncpg

    from taskd.cli import START_HINTS
    from taskd.queue.client import RedisQueue
    from taskd.store.pool import CONNECTION_ERRORS

    ok = True
    try:
        conn = await asyncpg.connect(settings.database.url, timeout=3)
        await conn.close()
    except asyncpg.InvalidCatalogNameError:
        pass  # migrate creates it
    except CONNECTION_ERRORS as e:
        print(
            f"PostgreSQL at {_safe(settings.database.url)} is unreachable ({e}).\n  "
            f"{START_HINTS['postgres']}",
            file=sys.stderr,
        )
        ok = False
    queue = RedisQueue.from_url(settings.redis.url, connect_timeout=3, socket_timeout=3)
    try:
        await queue.ping()
    except DependencyUnavailable as e:
        print(
            f"Redis at {_safe(settings.redis.url)} is unreachable ({e}).\n  {START_HINTS['redis']}",
            file=sys.stderr,
        )
        ok = False
    finally:
        await queue.close()
    return 0 if ok else 3


def _token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--banner", action="store_true", help="print the API URL and curl examples")
    p.add_argument("--sub", default="dev", help="subject (caller)")
    p.add_argument("--tenant", help="tenant (default: the subject)")
    p.add_argument("--scope", default="tasks:read tasks:write", help="space-separated scopes")
    p.add_argument("--ttl", type=float, default=24 * 3600, help="lifetime in seconds")
    p.add_argument(
        "--ui",
        action="store_true",
        help="print a one-time sign-in link to the dashboard instead of the token",
    )
    p.add_argument("--ui-url", help="the dashboard's base URL (default: from api.host/api.port)")


async def token(settings: Settings, args: argparse.Namespace) -> int:
    from taskd.api.auth import mint_token

    secret = settings.auth.jwt_secret
    if not secret:
        print("taskd token needs auth.jwt_secret (HS256) in the configuration", file=sys.stderr)
        return 2
    jwt = mint_token(
        secret,
        args.sub,
        tenant=args.tenant,
        scopes=args.scope.split(),
        ttl_seconds=args.ttl,
        audience=settings.auth.audience or None,
        issuer=settings.auth.issuer or None,
    )
    if args.ui:
        print(await _ui_link(settings, jwt, args.ui_url))
        return 0
    print(_banner(settings, jwt) if args.banner else jwt)
    return 0


async def _ui_link(settings: Settings, jwt: str, base: str | None) -> str:
    """Store the token under a random ticket in Redis for ``ui.login_link_seconds``; the link
    carries only the ticket, and signs in once (see taskd.queue.sessions)."""
    import secrets

    from taskd.queue.client import RedisQueue
    from taskd.queue.sessions import SessionStore

    ticket = secrets.token_urlsafe(24)
    queue = RedisQueue.from_url(settings.redis.url)
    try:
        ttl_ms = int(settings.ui.login_link_seconds * 1000)
        await SessionStore(queue.client).put_ticket(ticket, jwt, ttl_ms)
    finally:
        await queue.close()
    base = base or f"http://{settings.api.host}:{settings.api.port}"
    return f"{base.rstrip('/')}/ui/login?ticket={ticket}"


def _banner(settings: Settings, jwt: str) -> str:
    base = f"http://{settings.api.host}:{settings.api.port}"
    auth = f'-H "Authorization: Bearer {jwt}"'
    body = '{"type": "demo.echo", "payload": {"hello": "world"}}'
    flaky = '{"fail_times": 2}'
    return "\n".join(
        [
            "",
            f"taskd API   {base}   (OpenAPI {base}/openapi.json, docs {base}/docs)",
            f"dev token   {jwt}",
            "",
            "submit a task:",
            f"  curl -s -X POST {base}/v1/tasks {auth} -H 'Content-Type: application/json' \\",
            f"       -d '{body}'",
            "then wait for it to finish (the id is in the answer):",
            f"  curl -s '{base}/v1/tasks/<id>?wait=10' {auth}",
            "or with the CLI, from this directory:",
            f"  .venv/bin/taskd submit --config config/dev.yaml demo.flaky --payload '{flaky}'",
            "  .venv/bin/taskd status --config config/dev.yaml <id> --wait 10",
            "",
        ]
    )


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", help="API base URL (default: from api.host/api.port)")
    p.add_argument("--token", help="bearer token (default: $TASKD_TOKEN or a minted dev token)")


def _submit_args(p: argparse.ArgumentParser) -> None:
    _client_args(p)
    p.add_argument("type", help="task type")
    p.add_argument("--payload", default="{}", help="JSON payload")
    p.add_argument("--queue", default="default")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--delay", type=float)


def _status_args(p: argparse.ArgumentParser) -> None:
    _client_args(p)
    p.add_argument("id", help="task id")
    p.add_argument("--wait", type=float, default=0, help="long-poll up to this many seconds")


async def _call(
    settings: Settings, args: argparse.Namespace, method: str, path: str, body: Any = None
) -> int:
    import os

    from taskd.api.auth import mint_token

    base = args.api or f"http://{settings.api.host}:{settings.api.port}"
    bearer = (
        args.token
        or os.environ.get("TASKD_TOKEN")
        or (mint_token(settings.auth.jwt_secret, "cli") if settings.auth.jwt_secret else "")
    )
    headers = {"Authorization": f"Bearer {bearer}"}
    try:
        status, text = await _request(method, base + path, body, headers)
    except aiohttp.ClientError as e:
        print(f"taskd: cannot reach the API at {base}: {e}", file=sys.stderr)
        return 3
    try:
        print(json.dumps(json.loads(text), indent=2))
    except ValueError:
        print(text)
    return 0 if status < 400 else 1


async def _request(method: str, url: str, body: Any, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.text()


async def submit(settings: Settings, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "type": args.type,
        "payload": json.loads(args.payload),
        "queue": args.queue,
        "priority": args.priority,
    }
    if args.delay is not None:
        body["delay"] = args.delay
    return await _call(settings, args, "POST", "/v1/tasks", body)


async def status(settings: Settings, args: argparse.Namespace) -> int:
    suffix = f"?wait={args.wait:g}" if args.wait else ""
    return await _call(settings, args, "GET", f"/v1/tasks/{args.id}{suffix}")


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[..., Any]]] = {
    "migrate": (_migrate_args, migrate),
    "check": (_check_args, check),
    "token": (_token_args, token),
    "submit": (_submit_args, submit),
    "status": (_status_args, status),
    "dlq": (dlq_cli.setup, dlq_cli.main),
    "schedules": (schedules_cli.setup, schedules_cli.main),
}
