"""The ``taskd`` command: run roles, migrate, mint a dev token, submit, query."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import msgspec

from taskd import logs
from taskd.config import Settings, load_settings
from taskd.errors import ConfigError, DependencyUnavailable, HandlerError

COMMANDS = ("migrate", "token", "submit", "status", "check", "dlq")

START_HINTS = {
    "postgres": "start it with: "
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "redis": "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' "
    "--appendonly no",
}


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)


def role_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskd",
        description="Run taskd roles. Other commands: " + ", ".join(COMMANDS) + " (taskd CMD -h).",
    )
    p.add_argument(
        "--role",
        action="append",
        choices=["api", "worker", "promoter", "all"],
        required=True,
        help="role to run (repeatable); 'all' runs every role",
    )
    p.add_argument("--config", help="YAML settings file (default: $TASKD_CONFIG)")
    p.add_argument("--concurrency", type=int, help="worker slots (overrides worker.concurrency)")
    p.add_argument(
        "--handlers", action="append", default=[], help="module with @task handlers (repeatable)"
    )
    p.add_argument("--queue", action="append", default=[], help="queue to serve (repeatable)")
    return p


def _with_overrides(s: Settings, args: argparse.Namespace) -> Settings:
    w = s.worker
    w = msgspec.structs.replace(
        w,
        concurrency=args.concurrency or w.concurrency,
        handlers=tuple(w.handlers) + tuple(args.handlers),
        queues=tuple(args.queue) or w.queues,
    )
    return msgspec.structs.replace(s, worker=w)


def run_roles_command(argv: Sequence[str]) -> int:
    args = role_parser().parse_args(argv)
    roles = ["api", "worker", "promoter"] if "all" in args.role else sorted(set(args.role))
    settings = _with_overrides(load_settings(args.config), args)
    logs.setup(settings.log.level, settings.log.json)
    from taskd.registry import load_handlers
    from taskd.roles.main import run_roles

    registry = load_handlers(settings.worker.handlers if "worker" in roles else ())
    _run(run_roles(settings, roles, registry))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in COMMANDS:
            from taskd import commands

            return int(commands.dispatch(args[0], args[1:], _run))
        return run_roles_command(args)
    except ConfigError as e:
        print(f"taskd: {e}", file=sys.stderr)
        return 2
    except HandlerError as e:
        print(f"taskd: {e}", file=sys.stderr)
        return 2
    except DependencyUnavailable as e:
        which = "postgres" if "PostgreSQL" in str(e) else "redis"
        print(f"taskd: {e}\n  {START_HINTS[which]}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
