"""Build a Settings snapshot from defaults < YAML file < environment variables.

Environment variables are ``TASKD_<SECTION>__<KEY>`` (e.g. ``TASKD_DATABASE__URL``); values are
parsed as YAML scalars so ``TASKD_WORKER__CONCURRENCY=200`` is an int and
``TASKD_WORKER__QUEUES=[a, b]`` a list.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from taskd.config.settings import Settings
from taskd.errors import ConfigError

ENV_PREFIX = "TASKD_"
CONFIG_ENV = "TASKD_CONFIG"
# The test suite's own variables (TASKD_TEST_DATABASE__URL, ...) are not settings: processes the
# tests start inherit them and must not refuse to start over an "unknown section".
TEST_PREFIX = "TASKD_TEST_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _yaml_problem(e: yaml.YAMLError) -> str:
    """The problem and its position, without PyYAML's quote of the line: that line may hold a
    secret, and this message is logged when a reload is rejected."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return type(e).__name__


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """The nested mapping that ``TASKD_SECTION__KEY`` variables describe."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name.startswith(TEST_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if any(not part for part in path):
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_scalar(raw)
    return tree


def _parse_scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # A URL such as "redis://h:1/0" parses as a string anyway; keep odd parses (dates) as text.
    return value if isinstance(value, (str, int, float, bool, list, dict)) else raw


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build(data: Mapping[str, Any]) -> Settings:
    """Validate a merged mapping into an immutable snapshot."""
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"invalid configuration: {e}") from e
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    problems = []
    if s.worker.concurrency < 1:
        problems.append("worker.concurrency must be >= 1")
    if s.worker.lease_seconds <= 0:
        problems.append("worker.lease_seconds must be > 0")
    if not 1 <= s.worker.lease_batch <= 1000:
        problems.append("worker.lease_batch must be within 1..1000")
    if s.retry.backoff.factor < 1 or s.retry.backoff.base < 0:
        problems.append("retry.backoff needs factor >= 1 and base >= 0")
    if not 0 <= s.retry.max_retries <= 100:
        problems.append("retry.max_retries must be within 0..100")
    if s.log.level.upper() not in LOG_LEVELS:
        problems.append("log.level must be one of " + ", ".join(LOG_LEVELS))
    if s.ssm.prefix and not s.ssm.prefix.startswith("/"):
        problems.append("ssm.prefix must start with /")
    if s.ssm.poll_interval_seconds <= 0 or s.ssm.timeout_seconds <= 0:
        problems.append("ssm.poll_interval_seconds and ssm.timeout_seconds must be > 0")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    file = path or env.get(CONFIG_ENV)
    if file:
        data = read_yaml(file)
    return build(merge(data, env_overrides(env)))
