"""FaultProxy against the real Redis and Postgres: every fault does what the docstring says."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.fault.proxy import FaultProxy

pytestmark = pytest.mark.fault

PG_URL = os.environ.get("TASKD_TEST_DATABASE__URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TASKD_TEST_REDIS__URL", "redis://127.0.0.1:6379/0")
OK_TIMEOUT = 10.0  # for operations that must succeed: generous, never a bound under test
FAULT_TIMEOUT = 0.5  # client timeout for operations the blackhole must stall


def _target(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


class Backend:
    """How to open, use and close one client connection through a proxy."""

    name: str
    target: tuple[str, int]
    connection_errors: tuple[type[BaseException], ...]
    timeout_errors: tuple[type[BaseException], ...]

    async def open(self, proxy: FaultProxy, timeout: float = OK_TIMEOUT) -> Any:
        raise NotImplementedError

    async def roundtrip(self, client: Any, timeout: float = OK_TIMEOUT) -> None:
        raise NotImplementedError

    async def close(self, client: Any) -> None:
        raise NotImplementedError


class RedisBackend(Backend):
    name = "redis"
    target = _target(REDIS_URL, 6379)
    connection_errors = (redis.exceptions.ConnectionError,)
    timeout_errors = (redis.exceptions.TimeoutError,)

    async def open(self, proxy: FaultProxy, timeout: float = OK_TIMEOUT) -> Any:
        host, port = proxy.url_host_port
        client = aredis.Redis(
            host=host,
            port=port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=AsyncRetry(NoBackoff(), 0),  # surface every failure, don't paper over it
            # A pool health-checks idle connections on checkout and silently reconnects,
            # which would hide a reset from the "next command".
            single_connection_client=True,
        )
        try:
            await self.roundtrip(client)  # redis-py connects lazily
        except BaseException:
            await client.aclose()
            raise
        return client

    async def roundtrip(self, client: Any, timeout: float = OK_TIMEOUT) -> None:
        assert await client.ping() is True

    async def close(self, client: Any) -> None:
        await client.aclose()


class PostgresBackend(Backend):
    name = "postgres"
    target = _target(PG_URL, 5432)
    connection_errors = (ConnectionError, asyncpg.PostgresConnectionError)  # not TimeoutError
    timeout_errors = (TimeoutError,)

    async def open(self, proxy: FaultProxy, timeout: float = OK_TIMEOUT) -> Any:
        host, port = proxy.url_host_port
        return await asyncpg.connect(PG_URL, host=host, port=port, timeout=timeout)

    async def roundtrip(self, client: Any, timeout: float = OK_TIMEOUT) -> None:
        assert await client.fetchval("SELECT 1", timeout=timeout) == 1

    async def close(self, client: Any) -> None:
        await client.close(timeout=OK_TIMEOUT)


@pytest.fixture(params=[RedisBackend(), PostgresBackend()], ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend = request.param
    return b


@pytest.fixture
def proxy(backend: Backend) -> Iterator[FaultProxy]:
    with FaultProxy(*backend.target) as p:
        yield p


@asynccontextmanager
async def connected(
    backend: Backend, proxy: FaultProxy, timeout: float = OK_TIMEOUT
) -> AsyncIterator[Any]:
    client = await backend.open(proxy, timeout)
    try:
        yield client
    finally:
        await backend.close(client)


async def poll(condition: Callable[[], bool], timeout: float = OK_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


async def test_traffic_passes_through(backend: Backend, proxy: FaultProxy) -> None:
    assert proxy.connections == 0
    async with connected(backend, proxy) as client:
        for _ in range(3):
            await backend.roundtrip(client)
        assert proxy.connections >= 1
    await poll(lambda: proxy.connections == 0)


async def test_reset_all_breaks_open_connections(backend: Backend, proxy: FaultProxy) -> None:
    async with connected(backend, proxy) as client:
        await backend.roundtrip(client)
        assert proxy.reset_all() == 1
        assert proxy.connections == 0
        with pytest.raises(backend.connection_errors):
            await backend.roundtrip(client)
        async with connected(backend, proxy) as fresh:  # the server itself is fine
            await backend.roundtrip(fresh)
    await poll(lambda: proxy.connections == 0)
    assert proxy.reset_all() == 0


async def test_refuse_fails_new_connections_until_heal(backend: Backend, proxy: FaultProxy) -> None:
    async with connected(backend, proxy) as existing:
        proxy.refuse()
        for _ in range(2):
            with pytest.raises(backend.connection_errors):
                await backend.open(proxy)
        await backend.roundtrip(existing)  # refuse alone leaves open connections alone
        proxy.heal()
        async with connected(backend, proxy) as fresh:
            await backend.roundtrip(fresh)


async def test_refuse_and_reset_is_an_outage(backend: Backend, proxy: FaultProxy) -> None:
    async with connected(backend, proxy) as client:
        proxy.refuse()
        proxy.reset_all()
        with pytest.raises(backend.connection_errors):
            await backend.roundtrip(client)
        with pytest.raises(backend.connection_errors):
            await backend.open(proxy)
        proxy.heal()
        async with connected(backend, proxy) as fresh:
            await backend.roundtrip(fresh)


async def test_blackhole_stalls_until_heal(backend: Backend, proxy: FaultProxy) -> None:
    async with connected(backend, proxy, FAULT_TIMEOUT) as client:
        await backend.roundtrip(client, FAULT_TIMEOUT)
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(backend.timeout_errors):
            await backend.roundtrip(client, FAULT_TIMEOUT)
        assert time.monotonic() - started >= FAULT_TIMEOUT  # it hung, it did not fail fast
        with pytest.raises(backend.timeout_errors):
            await backend.open(proxy, FAULT_TIMEOUT)  # accepted, but nothing comes back
        proxy.heal()
        # Connections that lost bytes are reset on heal; only the ones opened after work.
        await poll(lambda: proxy.connections == 0)
        async with connected(backend, proxy) as fresh:
            await backend.roundtrip(fresh)


async def test_blackhole_spares_idle_connections(backend: Backend, proxy: FaultProxy) -> None:
    async with connected(backend, proxy) as client:
        proxy.blackhole()
        proxy.blackhole(False)  # nothing was lost: like a partition nobody noticed
        await backend.roundtrip(client)


async def test_latency_delays_each_direction(backend: Backend, proxy: FaultProxy) -> None:
    latency = 0.2
    async with connected(backend, proxy) as client:
        proxy.set_latency(latency)
        started = time.monotonic()
        await backend.roundtrip(client)
        assert time.monotonic() - started >= 2 * latency  # request and reply both delayed
        proxy.heal()
        await backend.roundtrip(client)


async def test_large_payload_survives_latency_intact() -> None:
    """Many chunks in flight through the timestamped queue, in order and complete."""
    backend = RedisBackend()
    with FaultProxy(*backend.target) as proxy:
        proxy.set_latency(0.01)
        async with connected(backend, proxy) as client:
            key, value = f"faultproxy:{uuid.uuid4().hex}", os.urandom(4 << 20)
            try:
                await client.set(key, value, ex=60)
                assert await client.get(key) == value
            finally:
                await client.delete(key)


def test_sync_control_and_sync_client() -> None:
    """No event loop in the test at all: the proxy brings its own."""
    with FaultProxy(*RedisBackend.target) as proxy:
        client = redis.Redis(
            host=proxy.listen_host,
            port=proxy.port,
            retry=Retry(NoBackoff(), 0),
            single_connection_client=True,  # see RedisBackend.open
        )
        try:
            assert client.ping() is True
            assert proxy.reset_all() == 1
            with pytest.raises(redis.exceptions.ConnectionError):
                client.ping()
            assert client.ping() is True  # the client reconnects
        finally:
            client.close()


async def test_proxy_runs_while_the_test_loop_is_blocked() -> None:
    with FaultProxy(*RedisBackend.target) as proxy:
        # A blocking client on the test's own loop: this would deadlock if the proxy
        # shared the loop.
        client = redis.Redis(host=proxy.listen_host, port=proxy.port, socket_timeout=OK_TIMEOUT)
        try:
            assert client.ping() is True
        finally:
            client.close()


async def test_target_down_resets_the_client() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with FaultProxy("127.0.0.1", dead_port) as proxy:
        # The reset may come before the connect completes or on the first read: either way a
        # reset (or broken pipe), never EOF.
        with pytest.raises(ConnectionError):
            reader, writer = await asyncio.open_connection(*proxy.url_host_port)
            try:
                writer.write(b"PING\r\n")
                await writer.drain()
                await reader.read(1)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):  # 3.11 re-raises the reset here
                    await writer.wait_closed()
        await poll(lambda: proxy.connections == 0)


async def test_lifecycle() -> None:
    proxy = FaultProxy(*RedisBackend.target)
    proxy.set_latency(0.01)  # faults can be armed before start
    with proxy:
        assert proxy.port != 0
        assert proxy.url_host_port == ("127.0.0.1", proxy.port)
        with pytest.raises(RuntimeError):
            proxy.start()
        async with connected(RedisBackend(), proxy) as client:
            proxy.stop()  # closes open connections too
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.ping()
        proxy.stop()  # idempotent
    with pytest.raises(ValueError):
        proxy.set_latency(-1)


async def test_stop_then_start_is_a_real_refusal_on_the_same_port() -> None:
    backend = RedisBackend()
    with FaultProxy(*backend.target) as proxy:
        port = proxy.port
        proxy.stop()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*proxy.url_host_port)
        proxy.start()
        assert proxy.port == port
        async with connected(backend, proxy) as client:
            await backend.roundtrip(client)
