"""Secrets out of sight: what ``taskd config show`` prints and reload log lines say. Pure.

A value is secret when its setting's name says so (``jwt_secret``, ``*password``, ``secret``,
``*token``, ``*private_key``...), and a URL's password (``scheme://user:PASSWORD@host``) or a
credential in its query string (``?password=...``) is secret wherever the URL appears. Names are
matched by pattern rather than listed, so settings added later are masked too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

MASK = "****"
_SECRET_NAME = re.compile(r"secret|password|passwd|token|private_key|api_key|credential", re.I)
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>.*)$", re.S)


def is_secret_name(name: str) -> bool:
    """Whether a setting named ``name`` (the last part of its dotted path) holds a secret."""
    return bool(_SECRET_NAME.search(name))


def mask_url(text: str) -> str:
    """``text`` with a URL's password and credential query parameters replaced by the mask."""
    m = _URL.match(text)
    if m is None:
        return text
    rest = m["rest"]
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:{MASK}@{hosts}"
    return m["scheme"] + authority + _mask_query(tail)


def _mask_query(tail: str) -> str:
    path, q, rest = tail.partition("?")
    if not q:
        return tail
    query, hash_, fragment = rest.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(is_secret_name(k) for k, _ in pairs):
        return tail
    masked = [(k, MASK if is_secret_name(k) else v) for k, v in pairs]
    return f"{path}?{urlencode(masked, safe='*')}{hash_}{fragment}"


def mask(name: str, value: Any) -> Any:
    """The value of setting ``name`` as it may be shown: secrets masked, recursively.

    An empty secret stays empty, so "not set" remains visible.
    """
    if isinstance(value, dict):
        return {k: mask(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask(name, v) for v in value]
    if isinstance(value, str):
        if is_secret_name(name):
            return MASK if value else ""
        return mask_url(value)
    if value is not None and is_secret_name(name):
        return MASK  # a secret that happened to parse as a number
    return value


def mask_path(path: str, value: Any) -> Any:
    """:func:`mask` for a dotted settings path."""
    return mask(path.rsplit(".", 1)[-1], value)
