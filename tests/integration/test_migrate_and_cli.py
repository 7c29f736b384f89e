"""Migrations (idempotent, serialised across replicas) and the CLI a newcomer meets first."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import asyncpg
import jwt

from taskd.store.migrate import discover, migrate
from tests.conftest import ADMIN_URL, SECRET, db_url

ROOT = Path(__file__).resolve().parents[2]


async def fresh_database() -> str:
    name = f"taskd_m_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_concurrent_migrations_apply_each_version_once() -> None:
    name = await fresh_database()
    try:
        conns = [await asyncpg.connect(db_url(name)) for _ in range(4)]
        results = await asyncio.gather(*(migrate(c) for c in conns))
        versions = [m.version for m in discover(ROOT / "migrations")]
        assert sorted(v for r in results for v in r) == versions  # each applied exactly once
        assert await migrate(conns[0]) == []  # and again: nothing to do
        applied = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY 1")
        assert [r["version"] for r in applied] == versions
        for c in conns:
            await c.close()
    finally:
        await drop(name)


async def test_schema_has_the_indexes_the_queries_need() -> None:
    name = await fresh_database()
    try:
        conn = await asyncpg.connect(db_url(name))
        await migrate(conn)
        indexes = {
            r["indexname"]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename IN ('tasks', 'attempts')"
            )
        }
        await conn.close()
        assert {
            "tasks_pkey",
            "tasks_idempotency",
            "tasks_live",
            "tasks_tenant",
            "tasks_tenant_status",
            "attempts_pkey",
        } <= indexes
    finally:
        await drop(name)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **env},
    )


def test_cli_migrate_creates_the_database_and_is_idempotent() -> None:
    name = f"taskd_cli_{secrets.token_hex(5)}"
    url = db_url(name)
    try:
        first = run_cli("migrate", TASKD_DATABASE__URL=url)
        assert first.returncode == 0, first.stderr
        assert "applied: [1" in first.stdout
        again = run_cli("migrate", TASKD_DATABASE__URL=url)
        assert again.returncode == 0 and "up to date" in again.stdout
    finally:
        asyncio.run(drop(name))


def test_cli_token_mints_a_valid_dev_jwt() -> None:
    out = run_cli("token", "--sub", "bob", "--tenant", "acme", TASKD_AUTH__JWT_SECRET=SECRET)
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["tenant"]) == ("bob", "acme")
    assert set(claims["scope"].split()) == {"tasks:read", "tasks:write"}


def test_cli_check_names_the_unreachable_dependency_and_how_to_start_it() -> None:
    out = run_cli("check", TASKD_DATABASE__URL=ADMIN_URL, TASKD_REDIS__URL="redis://127.0.0.1:1/0")
    assert out.returncode == 3
    assert "Redis at redis://127.0.0.1:1/0 is unreachable" in out.stderr
    assert "redis-server" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("check", TASKD_DATABASE__URL="postgresql://postgres@127.0.0.1:1/x")
    assert out.returncode == 3
    assert "PostgreSQL at postgresql://postgres@127.0.0.1:1/x is unreachable" in out.stderr
    assert "pg_ctlcluster" in out.stderr and "Traceback" not in out.stderr


def test_cli_refuses_a_bad_config_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("worker:\n  concurrency: lots\n")
    out = run_cli("--role", "worker", "--config", str(bad))
    assert out.returncode == 2
    assert "invalid configuration" in out.stderr and "Traceback" not in out.stderr


def test_cli_reports_a_missing_handler_module() -> None:
    out = run_cli("--role", "worker", "--handlers", "no.such.module")
    assert out.returncode == 2
    assert "cannot import handler module 'no.such.module'" in out.stderr
