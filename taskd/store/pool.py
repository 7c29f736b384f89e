"""Connection pool with the codecs and error translation every repository uses."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import asyncpg
import msgspec

from taskd.config.settings import DatabaseSettings
from taskd.errors import DatabaseUnavailable

P = ParamSpec("P")
R = TypeVar("R")

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()

# Errors that mean "the server or the connection is gone", as opposed to a bad statement.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    # Seen after pg_terminate_backend: the driver's protocol state no longer matches the
    # connection ("cannot switch to state 11; another operation is in progress").
    asyncpg.exceptions.InternalClientError,
)


def _encode_jsonb(value: Any) -> bytes:
    # Binary jsonb format: a version byte, then the JSON text (shared/PERF.md, item 4).
    return b"\x01" + _json_encoder.encode(value)


def _decode_jsonb(data: bytes) -> Any:
    return _json_decoder.decode(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Reset a connection going back to the pool without a round trip.

    asyncpg's default reset sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release, which adds a round trip to every store call (~80 µs of the
    submit -> start latency, bench/README.md). Pooled connections carry no session state to
    undo: taskd sets no session variables (server_settings are per connection), takes advisory
    locks only on migrate's own connection, opens no cursors outside transactions, and the one
    LISTEN (the notifier's) is removed by its holder. asyncpg still rolls back an open
    transaction and drops Python-side listeners before calling this.
    """


async def create_pool(settings: DatabaseSettings, *, url: str | None = None) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            url or settings.url,
            min_size=settings.min_connections,
            max_size=settings.max_connections,
            timeout=settings.connect_timeout,
            command_timeout=settings.statement_timeout,
            init=_init_connection,
            reset=_keep_session,
            server_settings={"application_name": settings.application_name},
        )
    except CONNECTION_ERRORS as e:
        raise DatabaseUnavailable(f"PostgreSQL is unreachable: {e}") from e
    return pool


def translated(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Turn connection-level driver errors into DatabaseUnavailable."""

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except CONNECTION_ERRORS as e:
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: {e}") from e

    return wrapper
