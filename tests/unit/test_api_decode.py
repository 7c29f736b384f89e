"""taskd.api.decode: msgspec errors become API.md field paths; bodies decode strictly."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from taskd.api.decode import decode, field_of
from taskd.api.errors import ApiError
from taskd.api.schemas import BatchSubmission, TaskSubmission


def error_for(body: bytes, kind: type[Any] = TaskSubmission) -> msgspec.ValidationError:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(body, type=kind)
    return caught.value


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        (b'{"type": 1}', "type", "Expected `str`, got `int`"),
        (b'{"type": "a", "priority": "x"}', "priority", "Expected `int`, got `str`"),
        (b'{"type": "a", "priority": 101}', "priority", "Expected `int` <= 100"),
        (b'{"type": "a", "colour": 1}', "colour", "unknown field"),
        (b'{"type": "a", "backoff": {"speed": 1}}', "backoff.speed", "unknown field"),
        (b'{"type": "a", "backoff": {"jitter": "x"}}', "backoff.jitter", "Invalid enum value 'x'"),
        (b'{"type": "a", "notify": {"on": ["X"]}}', "notify.on[0]", "Invalid enum value 'X'"),
        (b'{"type": "a", "labels": {"k": 1}}', "labels[...]", "Expected `str`, got `int`"),
        (b'{"payload": {}}', "type", "required field is missing"),
        (b"[]", "body", "Expected `object`, got `array`"),
        (b"null", "body", "Expected `object`, got `null`"),
    ],
)
def test_field_paths(body: bytes, field: str, text: str) -> None:
    assert field_of(error_for(body)) == (field, text)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"type": "a", "priority": 500}', "tasks[3].priority"),
        (b'{"type": "a", "zzz": 1}', "tasks[3].zzz"),
        (b'{"type": "a", "backoff": {"base": -1}}', "tasks[3].backoff.base"),
        (b"{}", "tasks[3].type"),
        (b"7", "tasks[3]"),
    ],
)
def test_field_paths_under_a_prefix(body: bytes, field: str) -> None:
    assert field_of(error_for(body), "tasks[3]")[0] == field


def test_batch_envelope_paths() -> None:
    assert field_of(error_for(b'{"tasks": []}', BatchSubmission))[0] == "tasks"
    assert field_of(error_for(b'{"tasks": 1}', BatchSubmission))[0] == "tasks"
    assert field_of(error_for(b"{}", BatchSubmission))[0] == "tasks"


def raised(body: bytes, kind: type[Any] = TaskSubmission, prefix: str = "") -> ApiError:
    with pytest.raises(ApiError) as caught:
        decode(body, kind, prefix=prefix)
    return caught.value


def test_decode_maps_errors_to_status_codes() -> None:
    assert raised(b"{").status == 400
    assert raised(b"{").code == "malformed_json"
    invalid = raised(b'{"type": "a", "priority": 500}')
    assert (invalid.status, invalid.code) == (422, "validation_failed")
    assert invalid.details == [{"field": "priority", "problem": "Expected `int` <= 100"}]


def test_malformed_json_wins_over_an_earlier_invalid_field() -> None:
    # msgspec validates while parsing, so the unknown field is seen before the syntax error.
    err = raised(b'{"colour": 1, "type": "a",}')
    assert (err.status, err.code) == (400, "malformed_json")
    err = raised(b'{"tasks": {"bad": 1}} trailing', BatchSubmission)
    assert err.status == 400


def test_out_of_range_numbers_are_validation_errors() -> None:
    assert raised(b'{"type": "a", "payload": 1e400}').status == 422
    assert raised(b'{"type": "a", "payload": [1' + b"0" * 5000 + b"]}").status == 422


def test_too_deep_nesting_is_a_validation_error() -> None:
    deep = b'{"type": "a", "payload": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    err = raised(deep)
    assert (err.status, err.details) == (422, [{"field": "body", "problem": "nested too deeply"}])
    assert raised(deep, prefix="tasks[2]").details[0]["field"] == "tasks[2]"


def test_decode_returns_the_struct() -> None:
    sub = decode(b'{"type": "a", "payload": [1]}', TaskSubmission)
    assert (sub.type, sub.payload, sub.queue, sub.priority) == ("a", [1], "default", 0)
