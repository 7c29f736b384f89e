"""The pure core of configuration reload: layering with provenance, settling a reload against the
running snapshot, SSM parameter mapping, and masking (DESIGN §7, STYLE item 3)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskd.config.loader import load_settings, read_yaml
from taskd.config.masking import MASK, mask, mask_path, mask_url
from taskd.config.settings import RUNTIME_TUNABLE, Settings, needs_restart
from taskd.config.snapshot import Layer, compose, defines, diff, leaves, settle, tree
from taskd.config.ssm import parameters_to_tree
from taskd.errors import ConfigError

ALL_PATHS = list(leaves(tree(Settings())))


def test_each_leaf_names_the_highest_layer_that_sets_it() -> None:
    snap = compose(
        [
            Layer("yaml", {"worker": {"concurrency": 5, "lease_seconds": 12}, "api": {"port": 1}}),
            Layer("env", {"worker": {"concurrency": 7}, "api": {"port": 2}}),
            Layer("ssm", {"api": {"port": 3}}),
        ]
    )
    s = snap.settings
    assert (s.worker.concurrency, snap.source("worker.concurrency")) == (7, "env")
    assert (s.worker.lease_seconds, snap.source("worker.lease_seconds")) == (12, "yaml")
    assert (s.api.port, snap.source("api.port")) == (3, "ssm")
    assert snap.source("api.host") == "default"
    assert set(snap.sources) == set(ALL_PATHS)


@given(
    st.lists(
        st.tuples(st.sampled_from(["yaml", "env", "cli", "ssm"]), st.integers(1, 10_000)),
        max_size=4,
    )
)
def test_the_last_layer_that_sets_a_value_wins(layers: list[tuple[str, int]]) -> None:
    snap = compose([Layer(name, {"worker": {"concurrency": n}}) for name, n in layers])
    expected = layers[-1] if layers else ("default", Settings().worker.concurrency)
    assert (snap.source("worker.concurrency"), snap.settings.worker.concurrency) == expected


def test_a_nested_mapping_sets_only_its_own_leaves() -> None:
    snap = compose([Layer("yaml", {"retry": {"backoff": {"base": 0.5}}})])
    assert snap.source("retry.backoff.base") == "yaml"
    assert snap.source("retry.backoff.factor") == "default"
    assert defines({"worker": 3}, "worker.concurrency")  # a scalar above a leaf covers it
    assert not defines({"worker": {}}, "worker.concurrency")


def test_lists_are_replaced_not_merged() -> None:
    snap = compose([Layer("yaml", {"worker": {"queues": ["a", "b"]}}), Layer("env", {})])
    assert snap.settings.worker.queues == ("a", "b")
    snap = compose(
        [
            Layer("yaml", {"worker": {"queues": ["a", "b"]}}),
            Layer("ssm", {"worker": {"queues": []}}),
        ]
    )
    assert (snap.settings.worker.queues, snap.source("worker.queues")) == ((), "ssm")


def test_compose_validates() -> None:
    with pytest.raises(ConfigError, match=r"worker.concurrency must be >= 1"):
        compose([Layer("ssm", {"worker": {"concurrency": 0}})])
    with pytest.raises(ConfigError, match=r"log.level"):
        compose([Layer("env", {"log": {"level": "LOUD"}})])
    with pytest.raises(ConfigError, match=r"ssm.prefix"):
        compose([Layer("yaml", {"ssm": {"prefix": "taskd/prod"}})])


def test_tunable_and_restart_required_settings() -> None:
    assert not needs_restart("worker.concurrency")
    assert not needs_restart("retry.backoff.base")  # "retry" covers everything under it
    assert not needs_restart("log.level")
    for path in ("database.url", "redis.url", "api.port", "ops.port", "worker.queues"):
        assert needs_restart(path), path
    assert needs_restart("worker.handlers") and needs_restart("auth.jwt_secret")
    assert needs_restart("ssm.poll_interval_seconds") and needs_restart("log.json")
    for entry in RUNTIME_TUNABLE:  # every entry names real settings
        assert any(p == entry or p.startswith(entry + ".") for p in ALL_PATHS), entry


def test_settle_applies_tunables_and_keeps_restart_required_values() -> None:
    current = compose([Layer("yaml", {"database": {"url": "postgresql://a/b"}})])
    candidate = compose(
        [
            Layer("yaml", {"database": {"url": "postgresql://c/d"}}),
            Layer("ssm", {"worker": {"concurrency": 9}, "api": {"port": 9999}}),
        ]
    )
    settled = settle(current, candidate)
    s = settled.snapshot.settings
    assert s.worker.concurrency == 9
    assert settled.snapshot.source("worker.concurrency") == "ssm"
    assert (s.database.url, s.api.port) == ("postgresql://a/b", Settings().api.port)
    assert settled.snapshot.source("database.url") == "yaml"
    assert settled.snapshot.source("api.port") == "default"
    assert [c.path for c in settled.applied] == ["worker.concurrency"]
    assert {c.path for c in settled.pending} == {"database.url", "api.port"}


@given(
    st.dictionaries(
        st.sampled_from(["concurrency", "lease_seconds", "lease_batch", "idle_wait_seconds"]),
        st.integers(1, 500),
    ),
    st.sampled_from(["DEBUG", "INFO", "WARNING"]),
)
def test_settle_never_changes_a_restart_required_value(worker: dict[str, int], level: str) -> None:
    current = compose([])
    settled = settle(current, compose([Layer("ssm", {"worker": worker, "log": {"level": level}})]))
    after = leaves(tree(settled.snapshot.settings))
    before = leaves(tree(current.settings))
    for path in ALL_PATHS:
        if needs_restart(path):
            assert after[path] == before[path], path
    assert after["log.level"] == level
    assert after["worker.concurrency"] == worker.get("concurrency", before["worker.concurrency"])
    assert all(not needs_restart(c.path) for c in settled.applied)
    assert all(needs_restart(c.path) for c in settled.pending)


def test_diff_lists_changed_leaves_only() -> None:
    a = compose([]).settings
    b = compose([Layer("env", {"retry": {"backoff": {"max": 9}}, "log": {"level": "INFO"}})])
    assert [(c.path, c.old, c.new) for c in diff(a, b.settings)] == [
        ("retry.backoff.max", 300.0, 9.0)
    ]


def params(*items: tuple[str, str, str]) -> list[dict[str, Any]]:
    return [{"Name": n, "Value": v, "Type": t} for n, v, t in items]


def test_ssm_parameters_map_to_settings() -> None:
    tree_ = parameters_to_tree(
        "/taskd/prod/",
        params(
            ("/taskd/prod/worker/concurrency", "200", "String"),
            ("/taskd/prod/worker/queues", "mail, sms", "StringList"),
            ("/taskd/prod/Retry/Backoff/Base", "0.5", "String"),
            ("/taskd/prod/auth/jwt_secret", "12345", "SecureString"),
            ("/taskd/prod/auth/audience", "yes", "SecureString"),
            ("/taskd/production/worker/concurrency", "1", "String"),  # another prefix
        ),
    )
    assert tree_ == {
        "worker": {"concurrency": 200, "queues": ["mail", "sms"]},
        "retry": {"backoff": {"base": 0.5}},
        "auth": {"jwt_secret": "12345", "audience": "yes"},  # SecureStrings stay text
    }
    s = compose([Layer("ssm", tree_)]).settings
    assert (s.worker.concurrency, s.auth.jwt_secret, s.retry.backoff.base) == (200, "12345", 0.5)


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["/p/worker", "/p/worker/concurrency"], "collides"),
        (["/p/worker/concurrency", "/p/worker"], "collides"),
        (["/p/ssm/prefix"], "SSM source itself"),
    ],
)
def test_ssm_parameters_that_cannot_be_settings(names: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parameters_to_tree("/p", params(*[(n, "1", "String") for n in names]))


def test_unknown_ssm_parameter_is_rejected_by_validation() -> None:
    with pytest.raises(ConfigError, match="concurency"):
        compose(
            [
                Layer(
                    "ssm", parameters_to_tree("/p", params(("/p/worker/concurency", "5", "String")))
                )
            ]
        )


_SAFE = st.text(string.ascii_letters + string.digits + "-_.~!$&'()*+,;=%", min_size=1, max_size=20)


@given(_SAFE, _SAFE, st.sampled_from(["postgresql", "redis", "amqp", "rediss", "https"]))
def test_a_urls_password_is_masked(user: str, password: str, scheme: str) -> None:
    url = f"{scheme}://{user}:{password}@db.example:5432/taskd?sslmode=require"
    assert mask_url(url) == f"{scheme}://{user}:{MASK}@db.example:5432/taskd?sslmode=require"
    assert mask_path("database.url", url) == mask_url(url)


@given(st.text(min_size=1))
def test_secret_settings_never_show_their_value(secret: str) -> None:
    for path in (
        "auth.jwt_secret",
        "notify.smtp.password",
        "notify.webhook.secret",
        "dlq.sasl_password",
    ):
        assert mask_path(path, secret) == MASK


def test_masking_details() -> None:
    assert mask_path("auth.jwt_secret", "") == ""  # "not set" stays visible
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"  # no password
    assert mask_url("amqp://guest:p@ss@h/") == f"amqp://guest:{MASK}@h/"
    assert mask_url("https://h/x?token=abc&x=1") == f"https://h/x?token={MASK}&x=1"
    assert mask_url("postgresql://h/db?password=pw") == f"postgresql://h/db?password={MASK}"
    assert mask_path("dlq.bootstrap_servers", "127.0.0.1:9092") == "127.0.0.1:9092"
    rules = [{"email": ["a@b"], "webhook": "https://u:pw@hook/x"}]
    assert mask("defaults", rules) == [{"email": ["a@b"], "webhook": f"https://u:{MASK}@hook/x"}]
    assert mask_path("auth.jwt_secret", 12345) == MASK


def test_a_yaml_syntax_error_does_not_quote_the_line(tmp_path: Path) -> None:
    path = tmp_path / "taskd.yaml"
    path.write_text('auth:\n  jwt_secret: "s3cret-value\n')
    with pytest.raises(ConfigError) as caught:
        read_yaml(path)
    assert "s3cret" not in str(caught.value)
    assert "line" in str(caught.value)


def test_load_settings_is_unchanged_by_layering(tmp_path: Path) -> None:
    path = tmp_path / "taskd.yaml"
    path.write_text("worker:\n  concurrency: 5\n")
    env = {"TASKD_API__PORT": "9100"}
    layered = compose([Layer("yaml", read_yaml(path)), Layer("env", {"api": {"port": 9100}})])
    assert layered.settings == load_settings(path, env)
