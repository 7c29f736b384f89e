"""Reload without servers: the file and a fake SSM source drive a Reloader; the live holder, the
subscribers the roles wire, and ``taskd config check``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

from taskd.backoff import Backoff
from taskd.config.live import LiveConfig
from taskd.config.reload import POLL, SIGHUP, Reloader, Sources, ssm_settings
from taskd.config.settings import RetrySettings, Settings
from taskd.config.snapshot import Snapshot
from taskd.config_cli import check
from taskd.errors import ConfigError, ConfigSourceUnavailable
from taskd.roles.promoter import _retune as retune_promoter
from taskd.roles.reload import apply_log_level
from taskd.services.maintenance import Reaper, Rescuer
from taskd.services.worker import Worker
from tests.helpers import eventually, registry_of
from tests.observability.metricvalues import Delta


class FakeSsm:
    """Stands in for SsmSource: returns ``tree`` or raises ``error``."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.error: ConfigError | None = None

    async def fetch(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return self.tree


def rewrite(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "taskd.yaml"
    path.write_text("worker:\n  concurrency: 4\nssm:\n  prefix: /taskd/test\n")
    return path


@pytest.fixture
def ssm() -> FakeSsm:
    return FakeSsm()


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="taskd")
    return caplog


async def started(config: Path, ssm: FakeSsm, **sources: Any) -> Reloader:
    reloader = Reloader(Sources(path=str(config), **sources), lambda s: ssm)
    await reloader.start()
    return reloader


def counts() -> Delta:
    return Delta(*[("taskd_config_reloads_total", {"result": r}) for r in RESULTS])


RESULTS = ("applied", "rejected", "failed")


async def test_sighup_rereads_the_file_and_notifies_subscribers(
    config: Path, ssm: FakeSsm, caplog_info: pytest.LogCaptureFixture
) -> None:
    reloader = await started(config, ssm)
    seen: list[tuple[int, int]] = []
    reloader.live.subscribe(
        lambda old, new: seen.append((old.worker.concurrency, new.worker.concurrency))
    )
    d = counts()
    rewrite(config, "worker:\n  concurrency: 6\nssm:\n  prefix: /taskd/test\n")
    assert await reloader.reload(POLL) == "unchanged"  # a poll keeps the file as last loaded
    assert await reloader.reload(SIGHUP) == "applied"
    assert seen == [(4, 6)]
    assert reloader.live.current.source("worker.concurrency") == "yaml"
    assert d("taskd_config_reloads_total", result="applied") == 1
    assert "configuration reloaded on SIGHUP: worker.concurrency: 4 -> 6 (yaml)" in caplog_info.text
    assert await reloader.reload(SIGHUP) == "unchanged"
    assert seen == [(4, 6)]
    assert "nothing to apply" in caplog_info.text


async def test_ssm_poll_applies_and_ssm_beats_the_file(config: Path, ssm: FakeSsm) -> None:
    ssm.tree = {"worker": {"concurrency": 2}}
    reloader = await started(config, ssm)
    assert reloader.polls
    assert reloader.live.settings.worker.concurrency == 2
    ssm.tree = {"worker": {"concurrency": 3}, "retry": {"max_retries": 9}}
    assert await reloader.reload(POLL) == "applied"
    s = reloader.live.settings
    assert (s.worker.concurrency, s.retry.max_retries) == (3, 9)
    ssm.tree = {}
    assert await reloader.reload(POLL) == "applied"  # a deleted parameter falls back
    assert reloader.live.settings.worker.concurrency == 4


async def test_an_invalid_value_is_rejected_once_and_the_snapshot_stays(
    config: Path, ssm: FakeSsm, caplog_info: pytest.LogCaptureFixture
) -> None:
    reloader = await started(config, ssm)
    before = reloader.live.current
    d = counts()
    ssm.tree = {"worker": {"concurrency": -1}}
    for _ in range(3):
        assert await reloader.reload(POLL) == "rejected"
    assert reloader.live.current is before
    assert d("taskd_config_reloads_total", result="rejected") == 1
    assert caplog_info.text.count("configuration rejected on SSM poll") == 1
    ssm.tree = {"worker": {"concurrency": "many"}}  # another problem: said again
    assert await reloader.reload(POLL) == "rejected"
    assert d("taskd_config_reloads_total", result="rejected") == 2
    rewrite(config, "worker: [")
    assert await reloader.reload(SIGHUP) == "rejected"
    assert await reloader.reload(SIGHUP) == "rejected"  # an operator's SIGHUP always answers
    assert d("taskd_config_reloads_total", result="rejected") == 4
    assert reloader.live.current is before
    assert d("taskd_config_reloads_total", result="applied") == 0


async def test_an_unreadable_source_fails_once_per_outage(
    config: Path, ssm: FakeSsm, caplog_info: pytest.LogCaptureFixture
) -> None:
    ssm.tree = {"worker": {"concurrency": 7}}
    reloader = await started(config, ssm)
    d = counts()
    ssm.error = ConfigSourceUnavailable("SSM parameters under /taskd/test could not be read")
    assert await reloader.reload(POLL) == "failed"
    assert await reloader.reload(POLL) == "failed"
    assert d("taskd_config_reloads_total", result="failed") == 1
    assert reloader.live.settings.worker.concurrency == 7  # the last values read stay
    rewrite(config, "worker:\n  concurrency: 4\nlog:\n  level: DEBUG\nssm:\n  prefix: /x\n")
    assert await reloader.reload(SIGHUP) == "applied"  # the file reloads; SSM's values stay
    assert reloader.live.settings.worker.concurrency == 7
    assert reloader.live.settings.log.level == "DEBUG"
    ssm.error = None
    assert await reloader.reload(POLL) == "unchanged"
    assert "SSM parameters readable again" in caplog_info.text


async def test_restart_required_changes_are_logged_once_and_not_applied(
    config: Path, ssm: FakeSsm, caplog_info: pytest.LogCaptureFixture
) -> None:
    reloader = await started(config, ssm)
    ssm.tree = {"database": {"url": "postgresql://u:hunter2@db/x"}, "worker": {"concurrency": 5}}
    assert await reloader.reload(POLL) == "applied"
    assert await reloader.reload(POLL) == "unchanged"
    s = reloader.live.settings
    assert (s.worker.concurrency, s.database.url) == (5, Settings().database.url)
    assert reloader.live.current.source("database.url") == "default"
    text = caplog_info.text
    assert text.count("restart required: database.url (ssm)") == 1
    assert "hunter2" not in text
    ssm.tree = {"database": {"url": "postgresql://u:hunter3@db/x"}}  # another pending value
    assert await reloader.reload(POLL) == "applied"  # concurrency went back to the file's 4
    assert caplog_info.text.count("restart required: database.url (ssm)") == 2
    assert "hunter3" not in caplog_info.text


async def test_command_line_flags_sit_between_the_environment_and_ssm(
    config: Path, ssm: FakeSsm
) -> None:
    rewrite(config, "worker:\n  handlers: [a.b]\nssm:\n  prefix: /p\n")
    reloader = await started(
        config,
        ssm,
        environ={"TASKD_WORKER__CONCURRENCY": "3", "TASKD_WORKER__QUEUES": "[x]"},
        concurrency=8,
        handlers=("c.d",),
    )
    live = reloader.live
    assert live.settings.worker.concurrency == 8
    assert live.settings.worker.handlers == ("a.b", "c.d")  # --handlers adds to the file's
    assert live.current.source("worker.queues") == "env"
    assert live.current.source("worker.concurrency") == "cli"
    ssm.tree = {"worker": {"concurrency": 2}}
    assert await reloader.reload(POLL) == "applied"
    assert live.current.source("worker.concurrency") == "ssm"
    assert live.settings.worker.handlers == ("a.b", "c.d")


async def test_sighup_handler_reloads_in_the_background(config: Path, ssm: FakeSsm) -> None:
    reloader = await started(config, ssm)
    rewrite(config, "worker:\n  concurrency: 11\nssm:\n  prefix: /taskd/test\n")
    reloader.sighup()

    async def reloaded() -> bool:
        return reloader.live.settings.worker.concurrency == 11

    await eventually(reloaded)


async def test_poll_rereads_ssm_every_interval(config: Path, ssm: FakeSsm) -> None:
    rewrite(config, "ssm:\n  prefix: /p\n  poll_interval_seconds: 0.01\n")
    reloader = await started(config, ssm)
    poller = asyncio.create_task(reloader.poll())
    try:
        ssm.tree = {"worker": {"concurrency": 13}}

        async def polled() -> bool:
            return reloader.live.settings.worker.concurrency == 13

        await eventually(polled)
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)


async def test_a_start_without_ssm_does_not_poll(tmp_path: Path) -> None:
    reloader = Reloader(Sources(environ={}))
    live = await reloader.start()
    assert not reloader.polls
    assert live.settings == Settings()


def test_live_config_swaps_whole_and_survives_a_failing_subscriber(
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = LiveConfig.fixed(Settings())
    calls: list[str] = []

    def broken(old: Settings, new: Settings) -> None:
        raise RuntimeError("boom")

    live.subscribe(broken)
    unsubscribe = live.subscribe(lambda old, new: calls.append(new.log.level))
    new = msgspec.structs.replace(
        Settings(), log=msgspec.structs.replace(Settings().log, level="DEBUG")
    )
    live.swap(Snapshot(new))
    assert live.settings is new
    assert calls == ["DEBUG"]
    assert "applying the reloaded configuration failed" in caplog.text
    unsubscribe()
    live.swap(Snapshot(Settings()))
    assert calls == ["DEBUG"]


def test_subscribers_apply_log_level_retry_defaults_and_concurrency() -> None:
    root = logging.getLogger()
    level = root.level
    old = Settings()
    new = msgspec.convert(
        {
            "log": {"level": "debug"},
            "retry": {"max_retries": 7, "timeout": 9, "backoff": {"base": 2}},
        },
        Settings,
    )
    try:
        apply_log_level(old, new)
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(level)

    worker = Worker(old.worker, old.retry, None, None, registry_of())  # type: ignore[arg-type]
    worker.retune(3, new.retry)
    assert (worker.slots.capacity, worker.settings.concurrency) == (3, 3)
    assert worker.runner.default_backoff == Backoff(base=2)
    assert worker.retry == RetrySettings(max_retries=7, timeout=9, backoff=Backoff(base=2))
    assert worker._defaults.max_retries_default == 7
    assert worker._defaults.timeout_default == 9

    reaper = Reaper(None, None, 3)  # type: ignore[arg-type]
    rescuer = Rescuer(None, None, 30.0, 3)  # type: ignore[arg-type]
    retune_promoter(new, reaper, rescuer, None)
    assert (reaper.max_retries_default, rescuer.max_retries_default) == (7, 7)


def test_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("worker:\n  concurrency: 5\nlog:\n  level: DEBUG\n")
    assert check(str(good), {}) == 0
    assert "valid (2 settings set" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text("worker:\n  concurency: 5\n")
    assert check(str(bad), {}) == 2
    err = capsys.readouterr().err
    assert "unknown field `concurency`" in err and "did you mean `concurrency`?" in err

    bad.write_text("worker:\n  concurrency: 0\nlog:\n  level: LOUD\n")
    assert check(str(bad), {}) == 2
    err = capsys.readouterr().err
    assert "worker.concurrency must be >= 1" in err and "log.level must be one of" in err

    assert check(str(tmp_path / "absent.yaml"), {}) == 2
    assert "cannot read" in capsys.readouterr().err
    assert check(str(good), {"TASKD_WORKER__CONCURRENCY": "0"}) == 2  # --env: with the env


def test_ssm_settings_come_from_the_local_sources_only() -> None:
    layers = Sources(environ={"TASKD_SSM__POLL_INTERVAL_SECONDS": "soon"}).local_layers()
    with pytest.raises(ConfigError, match=r"\$\.ssm\.poll_interval_seconds"):
        ssm_settings(layers)
    layers = Sources(environ={"TASKD_SSM__PREFIX": "/a", "TASKD_WORKER__CONCURRENCY": "0"})
    assert ssm_settings(layers.local_layers()).prefix == "/a"  # the rest is validated later
