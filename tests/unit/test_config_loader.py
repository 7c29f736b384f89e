"""Configuration: defaults < YAML file < TASKD_SECTION__KEY environment variables."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskd.config.loader import build, env_overrides, load_settings
from taskd.config.settings import Settings
from taskd.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "taskd.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment() -> None:
    assert load_settings(None, {}) == Settings()


def test_yaml_overrides_defaults_and_leaves_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "worker:\n  concurrency: 5\n  queues: [mail, sms]\napi:\n  port: 9000\n")
    s = load_settings(path, {})
    assert (s.worker.concurrency, s.worker.queues, s.api.port) == (5, ("mail", "sms"), 9000)
    assert s.worker.lease_seconds == Settings().worker.lease_seconds
    assert s.database == Settings().database


def test_environment_beats_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "worker:\n  concurrency: 5\n  lease_seconds: 12\n")
    s = load_settings(path, {"TASKD_WORKER__CONCURRENCY": "200"})
    assert s.worker.concurrency == 200
    assert s.worker.lease_seconds == 12  # what the environment leaves alone, the file keeps


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "api:\n  port: 9123\n")
    assert load_settings(None, {"TASKD_CONFIG": str(path)}).api.port == 9123


def test_environment_values_are_yaml_scalars() -> None:
    env = {
        "TASKD_WORKER__CONCURRENCY": "200",
        "TASKD_WORKER__QUEUES": "[a, b]",
        "TASKD_LOG__JSON": "false",
        "TASKD_API__MAX_WAIT_SECONDS": "2.5",
        "TASKD_DATABASE__URL": "postgresql://u:p@db:5432/taskd?sslmode=require",
        "TASKD_REDIS__URL": "redis://h:1/0",
        "TASKD_AUTH__AUDIENCE": "2024-01-01",  # a date-looking string stays a string
    }
    tree = env_overrides(env)
    assert tree["worker"]["concurrency"] == 200
    assert isinstance(tree["worker"]["concurrency"], int)
    s = load_settings(None, env)
    assert s.worker.concurrency == 200
    assert s.worker.queues == ("a", "b")
    assert s.log.json is False
    assert s.api.max_wait_seconds == 2.5
    assert s.database.url == "postgresql://u:p@db:5432/taskd?sslmode=require"
    assert s.redis.url == "redis://h:1/0"
    assert s.auth.audience == "2024-01-01"


def test_unrelated_environment_variables_are_ignored() -> None:
    env = {"TASKD_NOSECTION": "1", "OTHER__WORKER__X": "1", "PATH": "/bin", "TASKD___": "x"}
    assert load_settings(None, env) == Settings()


@given(st.integers(min_value=1, max_value=10**6))
def test_any_integer_from_the_environment_is_an_int(n: int) -> None:
    assert load_settings(None, {"TASKD_WORKER__CONCURRENCY": str(n)}).worker.concurrency == n


@pytest.mark.parametrize(
    "text",
    [
        "worker:\n  concurency: 5\n",  # a typo must not pass silently
        "wrker:\n  concurrency: 5\n",
        "worker:\n  concurrency: many\n",
        "worker:\n  concurrency: 0\n",
        "retry:\n  max_retries: 101\n",
        "retry:\n  backoff:\n    jitter: half\n",
    ],
)
def test_invalid_yaml_content_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, text), {})


def test_unknown_key_from_the_environment_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nope"):
        load_settings(None, {"TASKD_WORKER__NOPE": "1"})


@pytest.mark.parametrize(
    "text", ["worker: [unclosed\n", "worker:\n  a: 1\n b: 2\n", "\t- tab", "key: @bad"]
)
def test_malformed_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="YAML"):
        load_settings(write(tmp_path, text), {})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_must_hold_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, text), {})


def test_empty_yaml_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), {}) == Settings()


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml", {})


def test_settings_are_an_immutable_snapshot() -> None:
    s = build({"worker": {"concurrency": 3}})
    with pytest.raises(AttributeError):
        s.worker.concurrency = 4  # type: ignore[misc]
    assert msgspec.structs.replace(s.worker, concurrency=4).concurrency == 4
    assert s.worker.concurrency == 3


def test_the_test_suites_own_variables_are_not_settings() -> None:
    from taskd.config.loader import load_settings

    s = load_settings(
        environ={
            "TASKD_TEST_DATABASE__URL": "postgresql://x/y",
            "TASKD_DATABASE__URL": "postgresql://a/b",
        }
    )
    assert s.database.url == "postgresql://a/b"
