"""SIGHUP reloads the YAML file of a running ``taskd`` process (DESIGN §7): the log level and the
worker's concurrency change without a restart, a restart-required change is logged and not
applied, an invalid file is rejected and the running configuration stays, secrets are never
logged."""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request
from pathlib import Path

import yaml

from taskd.queue.client import RedisQueue
from taskd.store.tasks import TaskStore
from tests.conftest import REDIS_URL
from tests.fault.harness import Taskd, processes, role_env
from tests.helpers import eventually, new_task, submit, wait_terminal

SASL_PASSWORDS = ("sasl-pw-first-4b7d", "sasl-pw-second-9e2a")


def scrape(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m[1]) if m else None


def write(path: Path, concurrency: int, level: str, lease_batch: int, sasl_password: str) -> None:
    data = {
        "worker": {"concurrency": concurrency, "lease_batch": lease_batch},
        "log": {"level": level},
        "dlq": {"sink": "none", "sasl_password": sasl_password},
    }
    path.write_text(yaml.safe_dump(data))


async def wait_for(check: object, what: str, timeout: float = 15.0) -> None:
    async def probe() -> bool:
        return bool(check())  # type: ignore[operator]

    try:
        await eventually(probe, timeout=timeout, interval=0.05)
    except AssertionError as e:
        raise AssertionError(f"{what}: {e}") from None


async def test_sighup_reloads_the_file(
    database: str, store: TaskStore, queue: RedisQueue, queue_name: str, tmp_path: Path
) -> None:
    config = tmp_path / "taskd.yaml"
    write(config, 2, "INFO", 100, SASL_PASSWORDS[0])
    env = role_env(database, REDIS_URL, queue_name, tmp_path / "exec.log")
    env["TASKD_CONFIG"] = str(config)
    with processes() as started:
        worker = Taskd(["worker"], env, "sighup").start()
        started.append(worker)
        assert scrape(worker.port, "taskd_worker_slots") == 2

        # At INFO, an attempt's start (DEBUG) is not logged.
        [first] = await submit(store, queue, new_task(queue_name, "fault.work"))
        await wait_terminal(store, first)
        assert "attempt started" not in worker.log_path.read_text()

        write(config, 5, "DEBUG", 50, SASL_PASSWORDS[1])
        worker.signal(signal.SIGHUP)
        await wait_for(lambda: "configuration reloaded on SIGHUP" in worker.log(), "reload")
        assert scrape(worker.port, "taskd_worker_slots") == 5
        assert scrape(worker.port, 'taskd_config_reloads_total{result="applied"}') == 1
        log = worker.log()
        assert 'log.level: "INFO" -> "DEBUG" (yaml)' in log
        assert "restart required: worker.lease_batch (yaml), dlq.sasl_password (yaml)" in log

        [second] = await submit(store, queue, new_task(queue_name, "fault.work"))
        await wait_terminal(store, second)
        await wait_for(lambda: "attempt started" in worker.log(), "a DEBUG line")

        config.write_text("worker:\n  concurrency: 0\n")
        worker.signal(signal.SIGHUP)
        await wait_for(lambda: "configuration rejected on SIGHUP" in worker.log(), "rejection")
        assert scrape(worker.port, 'taskd_config_reloads_total{result="rejected"}') == 1
        assert "worker.concurrency must be >= 1" in worker.log()
        assert scrape(worker.port, "taskd_worker_slots") == 5

        worker.signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0
    text = worker.log_path.read_text()
    for secret in SASL_PASSWORDS:
        assert secret not in text
