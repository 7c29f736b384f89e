"""SubmitService.prepare and the idempotency fingerprint: pure rules, no database or Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskd.api.errors import ApiError
from taskd.api.schemas import TaskSubmission
from taskd.api.submit import SubmitService, fingerprint
from taskd.config.settings import Settings

SERVICE = SubmitService(None, None, Settings())  # type: ignore[arg-type]  # prepare() is pure


def sub(**fields: Any) -> TaskSubmission:
    return msgspec.convert({"type": "a", **fields}, TaskSubmission)


def problems(submission: TaskSubmission, header_key: str | None = None) -> list[str]:
    try:
        SERVICE.prepare(submission, "tenant", header_key)
    except ApiError as e:
        assert e.status == 422
        return [d["field"] for d in e.details]
    return []


# What a JSON body can carry and Postgres can store: no lone surrogates, no NUL.
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
payload_dicts = st.dictionaries(texts, json_values, min_size=2, max_size=8)


# --- fingerprint ----------------------------------------------------------------------------------


@given(payload_dicts)
def test_fingerprint_ignores_key_order(payload: dict[str, Any]) -> None:
    reordered = dict(reversed(list(payload.items())))
    assert fingerprint(sub(payload=payload)) == fingerprint(sub(payload=reordered))
    body = msgspec.json.encode({"payload": payload, "type": "a", "labels": {"b": "1", "a": "2"}})
    other = msgspec.json.encode({"labels": {"a": "2", "b": "1"}, "type": "a", "payload": reordered})
    assert fingerprint(msgspec.json.decode(body, type=TaskSubmission)) == fingerprint(
        msgspec.json.decode(other, type=TaskSubmission)
    )


@given(json_values, json_values)
def test_different_payloads_differ(a: Any, b: Any) -> None:
    same = msgspec.json.encode(a, order="deterministic") == msgspec.json.encode(
        b, order="deterministic"
    )
    assert (fingerprint(sub(payload=a)) == fingerprint(sub(payload=b))) == same


def test_the_key_is_not_part_of_the_fingerprint_but_other_fields_are() -> None:
    base = sub(payload={"x": 1}, idempotency_key="k1")
    assert fingerprint(base) == fingerprint(sub(payload={"x": 1}, idempotency_key="k2"))
    assert fingerprint(base) == fingerprint(sub(payload={"x": 1}))
    for change in [
        {"priority": 1},
        {"queue": "other"},
        {"type": "b"},
        {"labels": {"a": "b"}},
        {"delay": 1},
        {"max_retries": 0},
        {"payload": {"x": 1.0}},
    ]:
        assert fingerprint(base) != fingerprint(sub(**{"payload": {"x": 1}, **change})), change


# --- prepare --------------------------------------------------------------------------------------


@given(json_values)
def test_prepared_payload_is_the_submitted_json(payload: Any) -> None:
    new = SERVICE.prepare(sub(payload=payload), "t", None)
    assert msgspec.json.decode(msgspec.json.encode(new.payload)) == msgspec.json.decode(
        msgspec.json.encode(payload)
    )


@st.composite
def payloads_with_a_nul(draw: st.DrawFn) -> Any:
    """A JSON value with one NUL somewhere in a string or an object key."""
    nul = draw(st.text(max_size=3)) + "\x00" + draw(st.text(max_size=3))
    as_key = draw(st.booleans())
    value: Any = {nul: 1} if as_key else nul
    for wrap in draw(st.lists(st.sampled_from(["list", "dict"]), max_size=6)):
        value = [1, value] if wrap == "list" else {"k": value, "other": "x"}
    return value


@given(payloads_with_a_nul())
def test_a_nul_anywhere_in_the_payload_is_refused(payload: Any) -> None:
    assert problems(sub(payload=payload)) == ["payload"]


@pytest.mark.parametrize(("depth", "ok"), [(1, True), (128, True), (129, False), (900, False)])
def test_payload_depth_limit(depth: int, ok: bool) -> None:
    payload: Any = []
    for _ in range(depth - 1):
        payload = [payload]
    assert problems(sub(payload=payload)) == ([] if ok else ["payload"])
    wrapped: Any = {"leaf": 1}
    for _ in range(depth - 1):
        wrapped = {"k": wrapped}
    assert problems(sub(payload=wrapped)) == ([] if ok else ["payload"])


@pytest.mark.parametrize(
    ("run_at", "ok"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), True),
        (datetime(1969, 12, 31, 23, 59, tzinfo=UTC), False),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), False),
        (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), True),
        (datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), False),
        (datetime(2030, 1, 1), False),  # naive
    ],
)
def test_run_at_bounds(run_at: datetime, ok: bool) -> None:
    assert problems(sub(run_at=run_at)) == ([] if ok else ["run_at"])


def test_keys_and_hash() -> None:
    plain = SERVICE.prepare(sub(), "t", None)
    assert (plain.idempotency_key, plain.request_hash) == (None, None)
    from_header = SERVICE.prepare(sub(), "t", "hk")
    assert from_header.idempotency_key == "hk"
    assert from_header.request_hash == fingerprint(sub())
    same = SERVICE.prepare(sub(idempotency_key="hk"), "t", "hk")
    assert same.request_hash == from_header.request_hash
    assert problems(sub(idempotency_key="a"), "b") == ["idempotency_key"]


def test_prepare_fills_the_row() -> None:
    new = SERVICE.prepare(sub(queue="q", priority=5, delay=2.5, labels={"k": "v"}), "acme", None)
    assert (new.tenant, new.type, new.queue, new.priority) == ("acme", "a", "q", 5)
    assert (new.delay, new.run_at, new.labels) == (2.5, None, {"k": "v"})
    assert (new.max_retries, new.timeout, new.backoff, new.notify) == (None, None, None, None)
    assert new.id.version == 7
    assert SERVICE.prepare(sub(), "t", None).id != new.id


def test_problems_carry_the_batch_prefix() -> None:
    bad = sub(delay=1, run_at=datetime(2030, 1, 1, tzinfo=UTC), labels={"k": "\x00"})
    with pytest.raises(ApiError) as caught:
        SERVICE.prepare(bad, "t", None, prefix="tasks[7].")
    assert [d["field"] for d in caught.value.details] == ["tasks[7].delay", "tasks[7].labels"]
