"""SSM Parameter Store as the top configuration source, against moto in server mode (DESIGN §7):
a running worker follows a changed parameter within one poll interval, an invalid value is
rejected and reported while the running snapshot stays, SecureStrings are decrypted and never
shown, and the precedence is defaults < YAML < environment < SSM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskd import TaskContext
from taskd.config.reload import POLL, Reloader, Sources
from taskd.config.settings import SsmSettings
from taskd.config.ssm import SsmSource
from taskd.errors import ConfigSourceUnavailable
from taskd.queue.client import RedisQueue
from taskd.roles.main import run_roles
from taskd.store.tasks import TaskStore
from tests.conftest import REDIS_URL
from tests.fault.harness import ROOT, free_port
from tests.helpers import eventually, new_task, registry_of, submit, wait_terminal
from tests.observability.metricvalues import Delta, value
from tests.ssm import (  # noqa: F401  (fixtures)
    AWS_ENV,
    MotoSsm,
    aws_env_fixture,
    moto_ssm_fixture,
    ssm_prefix_fixture,
)

POLL_SECONDS = 0.5
JWT_SECRET = "jwt-from-ssm-7f3a9c1e5b2d4f6a8c0e"
DB_PASSWORD = "db-pw-5e1c7a9b3d"


def write_config(path: Path, database: str, queue: str, ssm: dict[str, Any]) -> Path:
    data = {
        "database": {"url": database, "min_connections": 1, "max_connections": 4},
        "redis": {"url": REDIS_URL},
        "worker": {
            "queues": [queue],
            "concurrency": 8,
            "lease_seconds": 5,
            "idle_wait_seconds": 0.2,
            "shutdown_grace_seconds": 5,
        },
        "ops": {"port": free_port()},
        "ssm": ssm,
    }
    path.write_text(yaml.safe_dump(data))
    return path


async def test_ssm_drives_a_running_worker(
    database: str,
    store: TaskStore,
    queue: RedisQueue,
    queue_name: str,
    moto_ssm: MotoSsm,
    ssm_prefix: str,
    aws_env: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Starts from SSM (concurrency, a SecureString JWT secret and database URL), then follows a
    changed concurrency within one poll; an invalid value and a restart-required change are
    reported and not applied; no secret reaches the log."""
    caplog.set_level(logging.INFO, logger="taskd")
    host_db = database.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")
    moto_ssm.put(f"{ssm_prefix}/worker/concurrency", "1")
    moto_ssm.put(f"{ssm_prefix}/auth/jwt_secret", JWT_SECRET, "SecureString")
    moto_ssm.put(f"{ssm_prefix}/database/url", host_db, "SecureString")
    ssm = {
        "prefix": ssm_prefix,
        "endpoint_url": moto_ssm.endpoint,
        "region": "us-east-1",
        "poll_interval_seconds": POLL_SECONDS,
    }
    path = write_config(tmp_path / "taskd.yaml", database, queue_name, ssm)
    reloader = Reloader(Sources(path=str(path)))
    live = await reloader.start()
    s = live.settings
    assert (s.worker.concurrency, s.auth.jwt_secret, s.database.url) == (1, JWT_SECRET, host_db)
    assert live.current.source("worker.concurrency") == "ssm"
    assert live.current.source("worker.lease_seconds") == "yaml"

    running: set[str] = set()
    release = asyncio.Event()

    async def hold(ctx: TaskContext, payload: Any) -> str:
        running.add(ctx.task_id)
        await release.wait()
        return "done"

    stop = asyncio.Event()
    roles = asyncio.create_task(run_roles(s, ["worker"], registry_of(t__hold=hold), reloader, stop))
    ids = await submit(store, queue, *[new_task(queue_name, "t.hold") for _ in range(4)])
    try:
        await eventually(lambda: _true(len(running) == 1))
        assert value("taskd_worker_slots") == 1

        d = Delta(("taskd_config_reloads_total", {"result": "applied"}))
        moto_ssm.put(f"{ssm_prefix}/worker/concurrency", "3")
        changed = time.monotonic()
        await eventually(lambda: _true(len(running) == 3), timeout=10)
        # Within one poll interval (plus the time one SSM round trip and a lease take).
        assert time.monotonic() - changed < POLL_SECONDS + 1.0
        assert value("taskd_worker_slots") == 3
        assert d("taskd_config_reloads_total", result="applied") == 1
        assert "worker.concurrency: 1 -> 3 (ssm)" in caplog.text

        d = Delta(("taskd_config_reloads_total", {"result": "rejected"}))
        moto_ssm.put(f"{ssm_prefix}/worker/concurrency", "0")
        await eventually(lambda: _true(d("taskd_config_reloads_total", result="rejected") == 1))
        assert "worker.concurrency must be >= 1" in caplog.text
        assert live.settings.worker.concurrency == 3
        assert value("taskd_worker_slots") == 3

        # A restart-required secret rotates in SSM: said, not applied, not shown.
        moto_ssm.put(f"{ssm_prefix}/worker/concurrency", "2")
        moto_ssm.put(f"{ssm_prefix}/auth/jwt_secret", JWT_SECRET + "-next", "SecureString")
        await eventually(lambda: _true(live.settings.worker.concurrency == 2), timeout=10)
        assert "restart required: auth.jwt_secret (ssm)" in caplog.text
        assert live.settings.auth.jwt_secret == JWT_SECRET
        assert value("taskd_worker_slots") == 2
    finally:
        release.set()
        for task_id in ids:
            await wait_terminal(store, task_id)
        stop.set()
        await asyncio.wait_for(roles, 30)
    assert JWT_SECRET not in caplog.text
    assert DB_PASSWORD not in caplog.text


async def _true(x: bool) -> bool:
    return x


async def test_precedence_defaults_yaml_env_ssm(
    moto_ssm: MotoSsm,
    ssm_prefix: str,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    moto_ssm.put(f"{ssm_prefix}/api/port", "9003")
    moto_ssm.put(f"{ssm_prefix}/worker/queues", "mail,sms", "StringList")
    moto_ssm.put(f"{ssm_prefix}/retry/backoff/base", "0.25")
    path = tmp_path / "taskd.yaml"
    path.write_text(
        "worker:\n  concurrency: 5\n  lease_seconds: 12\n  queues: [a]\napi:\n  port: 9001\n"
        f"ssm:\n  prefix: {ssm_prefix}\n  endpoint_url: {moto_ssm.endpoint}\n"
    )
    env = {"TASKD_WORKER__CONCURRENCY": "7", "TASKD_API__PORT": "9002"}
    live = await Reloader(Sources(path=str(path), environ=env)).start()
    s, src = live.settings, live.current.source
    assert (s.worker.lease_seconds, src("worker.lease_seconds")) == (12, "yaml")
    assert (s.worker.concurrency, src("worker.concurrency")) == (7, "env")  # env beats YAML
    assert (s.api.port, src("api.port")) == (9003, "ssm")  # SSM beats env
    assert (s.worker.queues, src("worker.queues")) == (("mail", "sms"), "ssm")
    assert (s.retry.backoff.base, src("retry.backoff.base")) == (0.25, "ssm")
    assert (s.retry.backoff.factor, src("retry.backoff.factor")) == (2.0, "default")


async def test_securestring_is_decrypted_and_taken_as_text(
    moto_ssm: MotoSsm,
    ssm_prefix: str,
    aws_env: dict[str, str],
) -> None:
    moto_ssm.put(f"{ssm_prefix}/auth/jwt_secret", "12345", "SecureString")  # text, not an int
    moto_ssm.put(f"{ssm_prefix}/log/level", "DEBUG")
    ssm = SsmSettings(prefix=ssm_prefix, endpoint_url=moto_ssm.endpoint)
    assert await SsmSource(ssm).fetch() == {
        "auth": {"jwt_secret": "12345"},
        "log": {"level": "DEBUG"},
    }


async def test_an_unreachable_ssm_fails_the_reload_once_and_keeps_the_snapshot(
    moto_ssm: MotoSsm,
    ssm_prefix: str,
    aws_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="taskd")
    moto_ssm.put(f"{ssm_prefix}/worker/concurrency", "4")
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"TASKD_SSM__PREFIX": ssm_prefix, "TASKD_SSM__ENDPOINT_URL": dead}
    with pytest.raises(ConfigSourceUnavailable, match=ssm_prefix):
        await Reloader(Sources(environ=env)).start()

    calls = 0

    class Flaky:
        """Answers once, then is unreachable."""

        async def fetch(self) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            endpoint = moto_ssm.endpoint if calls == 1 else dead
            return await SsmSource(SsmSettings(prefix=ssm_prefix, endpoint_url=endpoint)).fetch()

    reloader = Reloader(Sources(environ={"TASKD_SSM__PREFIX": ssm_prefix}), lambda s: Flaky())
    live = await reloader.start()
    d = Delta(("taskd_config_reloads_total", {"result": "failed"}))
    assert await reloader.reload(POLL) == "failed"
    assert await reloader.reload(POLL) == "failed"
    assert d("taskd_config_reloads_total", result="failed") == 1  # once per outage
    assert caplog.text.count("could not be read") == 1
    assert live.settings.worker.concurrency == 4


def test_config_show_masks_secrets_and_names_sources(
    moto_ssm: MotoSsm,
    ssm_prefix: str,
    tmp_path: Path,
) -> None:
    moto_ssm.put(f"{ssm_prefix}/auth/jwt_secret", JWT_SECRET, "SecureString")
    moto_ssm.put(f"{ssm_prefix}/worker/concurrency", "42")
    path = tmp_path / "taskd.yaml"
    path.write_text(
        "notify:\n  smtp:\n    password: smtp-pw-0a1b2c\n"
        "dlq:\n  rabbitmq_url: amqp://taskd:rabbit-pw-9z8y@mq:5672/\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKD_")},
        **AWS_ENV,
        "PYTHONPATH": str(ROOT),
        "TASKD_CONFIG": str(path),
        "TASKD_DATABASE__URL": f"postgresql://taskd:{DB_PASSWORD}@db:5432/taskd",
        "TASKD_SSM__PREFIX": ssm_prefix,
        "TASKD_SSM__ENDPOINT_URL": moto_ssm.endpoint,
    }
    for extra in ([], ["--json"]):
        out = subprocess.run(
            [sys.executable, "-m", "taskd", "config", "show", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for secret in (JWT_SECRET, DB_PASSWORD, "smtp-pw-0a1b2c", "rabbit-pw-9z8y"):
            assert secret not in out
    doc = json.loads(out)
    assert doc["auth.jwt_secret"] == {"value": "****", "source": "ssm"}
    assert doc["worker.concurrency"] == {"value": 42, "source": "ssm"}
    assert doc["database.url"] == {
        "value": "postgresql://taskd:****@db:5432/taskd",
        "source": "env",
    }
    assert doc["notify.smtp.password"] == {"value": "****", "source": "yaml"}
    assert doc["dlq.rabbitmq_url"]["value"] == "amqp://taskd:****@mq:5672/"
    assert doc["worker.lease_seconds"]["source"] == "default"
    assert doc["auth.public_key"] == {"value": "", "source": "default"}
