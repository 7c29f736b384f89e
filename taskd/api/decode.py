"""Decode request bodies strictly, turning every decoding problem into the API error format."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from taskd.api.errors import ApiError, problem, validation_error

T = TypeVar("T")

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def field_of(error: msgspec.ValidationError, prefix: str = "") -> tuple[str, str]:
    """``("payload.to", "Expected `int`, got `str`")`` from a msgspec message."""
    text = str(error)
    match = _PATH.search(text)
    path = match["path"].lstrip(".") if match else ""
    if match:
        text = text[: match.start()]
    if text.startswith("Object contains unknown field"):
        name = text.split("`")[1] if "`" in text else ""
        path = f"{path}.{name}".lstrip(".")
        text = "unknown field"
    elif text.startswith("Object missing required field"):
        name = text.split("`")[1] if "`" in text else ""
        path = f"{path}.{name}".lstrip(".")
        text = "required field is missing"
    return ((f"{prefix}.{path}" if path else prefix).strip(".") or "body", text)


async def read_json(request: web.Request) -> bytes:
    ctype = request.content_type
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        limit = request.app._client_max_size
        raise ApiError(
            413, "payload_too_large", f"the request body is over the limit of {limit} bytes"
        ) from e


def decode(body: bytes, kind: type[T], *, prefix: str = "") -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as e:
        # msgspec validates while it parses: a syntax error after the first invalid field is
        # still malformed JSON, and that is the 400 the client must see.
        _require_well_formed(body)
        field, text = field_of(e, prefix)
        raise validation_error([problem(field, text)]) from e
    except msgspec.DecodeError as e:
        raise _malformed(e) from e
    except RecursionError as e:  # msgspec's nesting limit: valid JSON we refuse to hold
        field = prefix or "body"
        raise validation_error([problem(field, "nested too deeply")]) from e


def _malformed(error: Exception) -> ApiError:
    return ApiError(400, "malformed_json", f"the body is not valid JSON: {error}")


def _require_well_formed(body: bytes) -> None:
    try:
        msgspec.json.decode(body)
    except (msgspec.ValidationError, RecursionError):
        pass  # well-formed but out of range or too deep: the validation error stands
    except msgspec.DecodeError as e:
        raise _malformed(e) from e


def convert(obj: Any, kind: type[T], *, prefix: str = "") -> T:
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as e:
        field, text = field_of(e, prefix)
        raise validation_error([problem(field, text)]) from e
