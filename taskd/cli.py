"""The ``taskd`` command: run roles, migrate, mint a dev token, submit, query."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from taskd import logs
from taskd.errors import ConfigError, DependencyUnavailable, HandlerError

if TYPE_CHECKING:
    from taskd.config.reload import Reloader, Sources

ALL_ROLES = ("api", "worker", "notifier", "promoter")
COMMANDS = ("migrate", "token", "submit", "status", "check", "dlq", "config", "schedules")

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
        choices=[*ALL_ROLES, "all"],
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


def role_sources(args: argparse.Namespace) -> Sources:
    """The configuration sources of a role process: flags sit above the environment, below SSM."""
    from taskd.config.reload import Sources

    return Sources(
        path=args.config,
        environ=dict(os.environ),
        concurrency=args.concurrency,
        queues=tuple(args.queue),
        handlers=tuple(args.handlers),
    )


def run_roles_command(argv: Sequence[str]) -> int:
    args = role_parser().parse_args(argv)
    roles = list(ALL_ROLES) if "all" in args.role else sorted(set(args.role))
    from taskd.config.reload import Reloader

    _run(_serve(Reloader(role_sources(args)), roles))
    return 0


async def _serve(reloader: Reloader, roles: list[str]) -> None:
    settings = (await reloader.start()).settings  # reads SSM when ssm.prefix is set
    logs.setup(settings.log.level, settings.log.json)
    from taskd.registry import load_handlers
    from taskd.roles.main import run_roles

    registry = load_handlers(settings.worker.handlers if "worker" in roles else ())
    await run_roles(settings, roles, registry, reloader)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "config":
            from taskd import config_cli

            return config_cli.main(args[1:], _run)
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
