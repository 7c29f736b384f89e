"""Reload: rebuild the configuration from every source, validate it, and swap the snapshot
(DESIGN §7). SIGHUP rereads the YAML file; SSM is polled every ``ssm.poll_interval_seconds``.

A reload that does not validate is rejected: one log line, ``taskd_config_reloads_total
{result="rejected"}``, and the running snapshot stays. A source that cannot be read (SSM down)
counts as ``failed`` and the last values read from it stay. A change to a setting that needs a
restart is logged as "restart required" and not applied. While the same problem persists, a poll
neither logs nor counts it again; a SIGHUP always answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from taskd import metrics
from taskd.config.live import LiveConfig
from taskd.config.loader import CONFIG_ENV, env_overrides, merge, read_yaml
from taskd.config.masking import mask_path
from taskd.config.settings import SsmSettings
from taskd.config.snapshot import Change, Layer, Snapshot, compose, settle
from taskd.errors import ConfigError, ConfigSourceUnavailable

log = logging.getLogger("taskd.config")

RESULTS = ("applied", "rejected", "failed")
SIGHUP = "SIGHUP"
POLL = "SSM poll"


class ParameterSource(Protocol):
    async def fetch(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Sources:
    """Where the configuration comes from: the YAML file, the environment, the command-line flags
    (``--concurrency``, ``--queue``, ``--handlers``), and SSM when ``ssm.prefix`` is set."""

    path: str | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    concurrency: int | None = None
    queues: tuple[str, ...] = ()
    handlers: tuple[str, ...] = ()  # added to worker.handlers

    @property
    def config_file(self) -> str | None:
        return self.path or self.environ.get(CONFIG_ENV) or None

    def local_layers(self) -> list[Layer]:
        """The yaml (read now), env and cli layers.

        Raises:
            ConfigError: the file cannot be read or is not a YAML mapping.
        """
        layers = []
        if self.config_file:
            layers.append(Layer("yaml", read_yaml(self.config_file)))
        layers.append(Layer("env", env_overrides(self.environ)))
        cli = self._flags(layers)
        if cli:
            layers.append(Layer("cli", cli))
        return layers

    def _flags(self, below: Sequence[Layer]) -> dict[str, Any]:
        worker: dict[str, Any] = {}
        if self.concurrency is not None:
            worker["concurrency"] = self.concurrency
        if self.queues:
            worker["queues"] = list(self.queues)
        if self.handlers:
            base = _merged(below).get("worker", {}).get("handlers", [])
            worker["handlers"] = [*(base if isinstance(base, list) else []), *self.handlers]
        return {"worker": worker} if worker else {}


def _merged(layers: Sequence[Layer]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        out = merge(out, layer.data)
    return out


class _SsmOnly(msgspec.Struct):
    ssm: SsmSettings = SsmSettings()


def ssm_settings(layers: Sequence[Layer]) -> SsmSettings:
    """The ``ssm`` section as the local sources set it (SSM never configures itself)."""
    try:
        data = {"ssm": _merged(layers).get("ssm", {})}
        return msgspec.convert(data, _SsmOnly, strict=False).ssm
    except msgspec.ValidationError as e:
        raise ConfigError(f"invalid configuration: {e}") from e


def describe(changes: Sequence[Change], snapshot: Snapshot) -> str:
    """``path: old -> new (source)`` for each change, secrets masked."""

    def show(path: str, value: Any) -> str:
        return msgspec.json.encode(mask_path(path, value)).decode()

    return ", ".join(
        f"{c.path}: {show(c.path, c.old)} -> {show(c.path, c.new)} ({snapshot.source(c.path)})"
        for c in changes
    )


class Reloader:
    """Owns the sources of a running process and its :class:`LiveConfig`."""

    def __init__(
        self,
        sources: Sources,
        ssm: Callable[[SsmSettings], ParameterSource] | None = None,
    ) -> None:
        self.sources = sources
        self._make_ssm = ssm or _ssm_source
        self._ssm: ParameterSource | None = None
        self._local: list[Layer] = []
        self._remote: list[Layer] = []
        self._live: LiveConfig | None = None
        self._lock = asyncio.Lock()
        self._problem: str | None = None
        self._source_down = False
        self._pending: dict[str, Any] = {}
        self._background: set[asyncio.Task[str]] = set()

    @property
    def live(self) -> LiveConfig:
        if self._live is None:
            raise RuntimeError("Reloader.start() has not run")
        return self._live

    @property
    def polls(self) -> bool:
        """Whether SSM is configured, so :meth:`poll` has something to do."""
        return self._ssm is not None

    async def start(self) -> LiveConfig:
        """Read every source once and hold the result as the live configuration.

        Raises:
            ConfigError: a source is invalid or (ConfigSourceUnavailable) SSM cannot be read.
        """
        self._local = self.sources.local_layers()
        ssm = ssm_settings(self._local)
        if ssm.prefix:
            self._ssm = self._make_ssm(ssm)
            self._remote = [Layer("ssm", await self._ssm.fetch())]
        self._live = LiveConfig(compose([*self._local, *self._remote]))
        for result in RESULTS:
            metrics.CONFIG_RELOADS.labels(result)  # exported as 0 until it happens
        return self._live

    async def reload(self, trigger: str = SIGHUP) -> str:
        """Rebuild, validate and swap. ``SIGHUP`` rereads the file (and keeps the last values
        read from SSM); ``POLL`` rereads SSM (and keeps the file as last loaded).

        Returns:
            "applied", "unchanged", "rejected" or "failed".
        """
        async with self._lock:
            try:
                local, remote = await self._read(trigger)
                candidate = compose([*local, *remote])
                settled = settle(self.live.current, candidate)
            except ConfigSourceUnavailable as e:
                return self._failed(trigger, e)
            except ConfigError as e:
                return self._rejected(trigger, e)
            self._local, self._remote = local, remote
            self._accepted(trigger)
            self._report_pending(trigger, settled.pending, candidate)
            if not settled.applied:
                if trigger == SIGHUP:
                    log.info("configuration reloaded on %s: nothing to apply", trigger)
                return "unchanged"
            self.live.swap(settled.snapshot)
            metrics.CONFIG_RELOADS.labels("applied").inc()
            log.info(
                "configuration reloaded on %s: %s",
                trigger,
                describe(settled.applied, settled.snapshot),
            )
            return "applied"

    async def _read(self, trigger: str) -> tuple[list[Layer], list[Layer]]:
        if trigger == SIGHUP:
            return self.sources.local_layers(), self._remote
        if self._ssm is None:
            return self._local, self._remote
        return self._local, [Layer("ssm", await self._ssm.fetch())]

    def _rejected(self, trigger: str, e: ConfigError) -> str:
        if trigger == SIGHUP or str(e) != self._problem:
            self._problem = str(e)
            metrics.CONFIG_RELOADS.labels("rejected").inc()
            log.error("configuration rejected on %s, keeping the running one: %s", trigger, e)
        return "rejected"

    def _failed(self, trigger: str, e: ConfigError) -> str:
        if trigger == SIGHUP or not self._source_down:
            self._source_down = True
            metrics.CONFIG_RELOADS.labels("failed").inc()
            log.warning("configuration not reloaded on %s, keeping the running one: %s", trigger, e)
        return "failed"

    def _accepted(self, trigger: str) -> None:
        if self._source_down and trigger == POLL:
            log.info("SSM parameters readable again")
            self._source_down = False
        self._problem = None

    def _report_pending(self, trigger: str, pending: Sequence[Change], candidate: Snapshot) -> None:
        now = {c.path: c.new for c in pending}
        if now and (trigger == SIGHUP or now != self._pending):
            where = ", ".join(f"{c.path} ({candidate.source(c.path)})" for c in pending)
            log.warning(
                "restart required: %s changed on %s; the running value stays until taskd restarts",
                where,
                trigger,
            )
        self._pending = now

    async def poll(self) -> None:
        """Reread SSM every ``ssm.poll_interval_seconds`` until cancelled."""
        interval = self.live.settings.ssm.poll_interval_seconds
        while True:
            await asyncio.sleep(interval)
            await self._guarded(POLL)

    def sighup(self) -> None:
        """Signal handler: reload in the background (the file is reread)."""
        task = asyncio.get_running_loop().create_task(self._guarded(SIGHUP))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _guarded(self, trigger: str) -> str:
        try:
            return await self.reload(trigger)
        except Exception:
            log.exception("configuration reload on %s failed", trigger)
            return "failed"


def _ssm_source(settings: SsmSettings) -> ParameterSource:
    from taskd.config.ssm import SsmSource

    return SsmSource(settings)
