"""AWS SSM Parameter Store as a configuration source (DESIGN §7).

Every parameter under ``ssm.prefix`` sets one setting: ``/taskd/prod/worker/concurrency`` sets
``worker.concurrency``, ``/taskd/prod/retry/backoff/base`` sets ``retry.backoff.base`` (names are
matched lower-cased). ``String`` values are YAML scalars like environment variables (``200`` is
an int, ``[a, b]`` a list); ``StringList`` values are comma-separated lists; ``SecureString``
values are decrypted and taken as text, never parsed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from taskd.config.loader import _parse_scalar
from taskd.config.settings import SsmSettings
from taskd.errors import ConfigError, ConfigSourceUnavailable


def parameters_to_tree(prefix: str, parameters: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The settings that ``GetParametersByPath`` results under ``prefix`` describe. Pure.

    Raises:
        ConfigError: two parameters collide (``/p/worker`` and ``/p/worker/concurrency``), or a
            parameter tries to configure the SSM source itself.
    """
    root = prefix.rstrip("/")
    data: dict[str, Any] = {}
    for p in sorted(parameters, key=lambda p: str(p["Name"])):
        name = str(p["Name"])
        if not name.startswith(root + "/"):
            continue
        path = [part.lower() for part in name[len(root) + 1 :].split("/") if part]
        if not path:
            continue
        if path[0] == "ssm":
            raise ConfigError(f"SSM parameter {name} cannot configure the SSM source itself")
        _put(data, path, _value(p), name)
    return data


def _value(p: Mapping[str, Any]) -> Any:
    raw = str(p.get("Value", ""))
    kind = p.get("Type", "String")
    if kind == "SecureString":
        return raw
    if kind == "StringList":
        return [item.strip() for item in raw.split(",") if item.strip()]
    return _parse_scalar(raw)


def _put(data: dict[str, Any], path: list[str], value: Any, name: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"SSM parameter {name} collides with a parameter above it")
        node = child
    if isinstance(node.get(path[-1]), dict):
        raise ConfigError(f"SSM parameter {name} collides with parameters below it")
    node[path[-1]] = value


class SsmSource:
    """Reads the parameters under ``ssm.prefix`` (aioboto3; one session, a client per read)."""

    def __init__(self, settings: SsmSettings) -> None:
        import aioboto3

        self.settings = settings
        self._session = aioboto3.Session(region_name=settings.region or None)

    async def fetch(self) -> dict[str, Any]:
        """The settings under the prefix, SecureStrings decrypted.

        Raises:
            ConfigSourceUnavailable: SSM could not be read (unreachable, denied, timed out).
            ConfigError: the parameters do not describe settings (see parameters_to_tree).
        """
        # botocore ships no type information (pyproject's mypy overrides cover aioboto3 only).
        from botocore.config import Config  # type: ignore[import-untyped]
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        s = self.settings
        config = Config(
            connect_timeout=s.timeout_seconds,
            read_timeout=s.timeout_seconds,
            retries={"total_max_attempts": 2, "mode": "standard"},  # the poll retries too
        )
        found: list[Mapping[str, Any]] = []
        try:
            async with self._session.client(
                "ssm", endpoint_url=s.endpoint_url or None, config=config
            ) as client:
                pages = client.get_paginator("get_parameters_by_path").paginate(
                    Path=s.prefix.rstrip("/") or "/", Recursive=True, WithDecryption=True
                )
                async for page in pages:
                    found.extend(page.get("Parameters", []))
        except (BotoCoreError, ClientError) as e:
            raise ConfigSourceUnavailable(
                f"SSM parameters under {s.prefix} could not be read: {e}"
            ) from e
        return parameters_to_tree(s.prefix, found)
