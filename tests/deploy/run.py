"""Start a ``Container`` here as its orchestrator would: the image's entrypoint and files, the
container's arguments, environment and mounts, against local Postgres and Redis."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from taskd.cli import ALL_ROLES, role_parser
from taskd.commands import COMMANDS
from taskd.config.loader import load_settings
from taskd.config.settings import Settings
from tests.deploy.image import Image
from tests.deploy.stacks import Container
from tests.fault.harness import free_port
from tests.helpers import eventually


def parse_args(args: list[str]) -> argparse.Namespace:
    """The container's arguments through taskd's own parsers (SystemExit if they do not parse)."""
    if args and not args[0].startswith("-"):
        parser = argparse.ArgumentParser(prog=f"taskd {args[0]}")
        parser.add_argument("--config")
        setup, _ = COMMANDS[args[0]]
        setup(parser)
        return parser.parse_args(args[1:])
    return role_parser().parse_args(args)


def roles(args: list[str]) -> list[str]:
    chosen = parse_args(args).role
    return list(ALL_ROLES) if "all" in chosen else sorted(set(chosen))


@dataclass
class Prepared:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    mounts: dict[str, Path]


class Launcher:
    def __init__(self, image: Image, tmp: Path) -> None:
        self.image = image
        self.tmp = tmp

    def prepare(self, c: Container, overrides: dict[str, str] | None = None) -> Prepared:
        """Mount the container's volumes under a directory of its own; build its environment."""
        home = self.tmp / c.name.replace("/", "_")
        mounts: dict[str, Path] = {}
        for path, files in c.files.items():
            mounts[path] = home / path.lstrip("/")
            for rel, text in files.items():
                (mounts[path] / rel).parent.mkdir(parents=True, exist_ok=True)
                (mounts[path] / rel).write_text(text)
        for path in c.empty_dirs:
            mounts[path] = home / path.lstrip("/")
            mounts[path].mkdir(parents=True, exist_ok=True)
        env = self.image.process_env(mounts, {**c.env, **(overrides or {})})
        args = [self._map(a, mounts) for a in c.args]
        cwd = self.image.local(self.image.workdir, mounts)
        return Prepared(self.image.program() + args, env, cwd, mounts)

    def _map(self, arg: str, mounts: dict[str, Path]) -> str:
        if arg.startswith("/") and self.image.local(arg, mounts).exists():
            return str(self.image.local(arg, mounts))
        return arg

    def settings(self, c: Container) -> Settings:
        """The settings the container's process builds (its --config, TASKD_CONFIG, env)."""
        p = self.prepare(c)
        config = getattr(parse_args([self._map(a, p.mounts) for a in c.args]), "config", None)
        return load_settings(self._map(config, p.mounts) if config else None, environ=p.env)


@dataclass
class Running:
    container: Container
    proc: asyncio.subprocess.Process
    log: Path
    port: int  # where its probes are served here

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def answers(self, path: str) -> bool:
        if self.proc.returncode is not None:
            raise AssertionError(f"{self.container.name} exited: {self.tail()}")
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
                http.get(url) as resp,
            ):
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def stop(self) -> int:
        """SIGTERM, as the kubelet sends it; the exit code within the grace period."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.container.grace_seconds):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(
                f"{self.container.name} outlived its {self.container.grace_seconds}s grace "
                f"period after SIGTERM: {self.tail()}"
            ) from None


async def run_job(launcher: Launcher, c: Container, overrides: dict[str, str]) -> tuple[int, str]:
    p = launcher.prepare(c, overrides)
    proc = await asyncio.create_subprocess_exec(
        *p.argv,
        env=p.env,
        cwd=p.cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode(errors="replace")


@contextlib.asynccontextmanager
async def started(
    launcher: Launcher, containers: list[Container], overrides: dict[str, str]
) -> AsyncIterator[list[Running]]:
    """Start every container with its own free port; SIGTERM them all at the end."""
    running: list[Running] = []
    try:
        for c in containers:
            port = free_port()
            which = "API" if "api" in roles(c.args) else "OPS"
            p = launcher.prepare(c, {**overrides, f"TASKD_{which}__PORT": str(port)})
            log = launcher.tmp / f"{c.name.replace('/', '_')}.log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *p.argv, env=p.env, cwd=p.cwd, stdout=out, stderr=out
                )
            running.append(Running(c, proc, log, port))
        for r in running:
            for probe in r.container.probes:
                await eventually(lambda r=r, p=probe.path: r.answers(p), timeout=30, interval=0.05)
        yield running
    finally:
        for r in running:
            if r.proc.returncode is None:
                r.proc.kill()
                await r.proc.wait()
