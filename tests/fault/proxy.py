"""A small TCP fault-injection proxy for fault tests (in the spirit of Toxiproxy).

Point a client (a taskd subprocess, redis-py, asyncpg, ...) at ``proxy.port`` instead of the
real server; the proxy forwards bytes both ways until a test injects a fault:

* ``reset_all()`` -- every open connection is aborted with a TCP RST on both sides: a crashed
  server, a restarted load balancer, a firewall dropping its state. Clients get a "connection
  reset/lost" error on their next read or write; the server sees its sessions die.
* ``refuse()`` -- new connections are accepted and at once reset (the listener stays up, so
  it is a reset, not ``ECONNREFUSED``): a server that is down or rejecting. Open connections
  are untouched; with ``reset_all()`` this is a full outage. For a true ``ECONNREFUSED`` use
  ``stop()`` and later ``start()``, which listens on the same port again.
* ``blackhole()`` -- a network partition: connections are still accepted but every byte in
  either direction (and a FIN) is swallowed and nothing is answered, on new and existing
  connections; clients notice only through their own timeouts. New connections never reach
  the server. A connection that lost bytes has a hole in its protocol stream, so lifting the
  blackhole resets it (as TCP does once retransmissions give up); idle ones carry on.
* ``set_latency(s)`` -- a slow network: each chunk is forwarded ``s`` seconds after it was
  read, in each direction, so a round trip costs at least ``2 * s``. Order is kept and
  pipelined traffic is not serialised.
* ``heal()`` -- all of the above off.

The proxy runs its own event loop in its own thread, so it serves subprocesses and keeps
working while the test's loop is blocked. Every method is synchronous and thread-safe and has
taken effect when it returns (reset sockets are closed by then). They block only for a loop
round trip, so async tests may call them directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_CHUNK = 64 * 1024
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on with timeout 0: close() sends an RST


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Abort a connection with a TCP RST instead of an orderly FIN."""
    if writer is None or writer.transport.is_closing():
        return
    if (sock := writer.get_extra_info("socket")) is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


class _Link:
    """One client connection, its upstream connection and the task forwarding between them."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.tainted = False  # bytes were lost to the blackhole

    def abort(self) -> None:
        _rst(self.client)
        _rst(self.upstream)
        if self.task is not None:
            self.task.cancel()


class FaultProxy:
    """A TCP proxy to ``target_host:target_port`` whose faults tests switch on and off."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.listen_host, self.port = listen_host, listen_port
        self._blackhole = self._refuse = self._closed = False
        self._latency = 0.0
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    def start(self) -> None:
        """Listen from a new thread; ``port`` is bound on return (and kept for a restart)."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        self._closed = False
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        name = f"FaultProxy->{self.target_host}:{self.target_port}"
        thread = threading.Thread(target=self._main, args=(ready,), name=name, daemon=True)
        thread.start()
        try:
            ready.result(timeout=10)  # re-raises a bind error
        except BaseException:
            thread.join(timeout=10)
            raise
        self._thread = thread

    def stop(self) -> None:
        """Reset every connection, stop listening and join the thread (idempotent)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url_host_port(self) -> tuple[str, int]:
        return self.listen_host, self.port

    @property
    def connections(self) -> int:
        """Client connections currently open (including blackholed ones)."""
        return self._call(lambda: len(self._links))

    def reset_all(self) -> int:
        """RST every open connection on both sides; return how many client connections."""
        return self._call(lambda: self._abort(lambda _: True))

    def blackhole(self, on: bool = True) -> None:
        """Swallow all traffic; when lifted, reset the connections that lost bytes."""

        def apply() -> None:
            self._blackhole = on
            if not on:
                self._abort(lambda link: link.tainted)

        self._call(apply)

    def refuse(self, on: bool = True) -> None:
        """Reset new connections as soon as they are accepted."""
        self._call(lambda: setattr(self, "_refuse", on))

    def set_latency(self, seconds: float) -> None:
        """Forward every chunk ``seconds`` after it was read, in each direction."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._call(lambda: setattr(self, "_latency", seconds))

    def heal(self) -> None:
        """Blackhole off (resetting connections that lost bytes), refuse off, latency 0."""
        self.refuse(False)
        self.set_latency(0.0)
        self.blackhole(False)

    # --- the proxy's own thread ----------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the proxy's loop and wait for it (directly if not running)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return fn()
        if threading.get_ident() == thread.ident:
            return fn()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:  # answer one iteration later, once aborted sockets are closed
            try:
                loop.call_soon(fut.set_result, fn())
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(timeout=10)

    def _abort(self, which: Callable[[_Link], bool]) -> int:
        doomed = [link for link in self._links if which(link)]
        for link in doomed:
            self._links.discard(link)
            link.abort()
        return len(doomed)

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        self._stopping = asyncio.Event()
        try:
            server = await asyncio.start_server(self._accept, self.listen_host, self.port)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        self.port = server.sockets[0].getsockname()[1]
        ready.set_result(None)
        await self._stopping.wait()
        self._closed = True  # connections still in the accept pipeline get reset by _accept
        server.close()
        for _ in range(50):  # until every connection task has finished
            self._abort(lambda _: True)
            if not (others := asyncio.all_tasks() - {asyncio.current_task()}):
                break
            await asyncio.wait(others, timeout=0.1)
        await server.wait_closed()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Our own task, not start_server's: 3.11's streams log an error for a cancelled one.
        if self._refuse or self._closed:
            _rst(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        link.task = asyncio.get_running_loop().create_task(self._forward(link, reader))

    async def _forward(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            if self._blackhole:  # the server never hears of it; reset on heal
                link.tainted = True
                while await reader.read(_CHUNK):
                    pass
                return
            upstream, link.upstream = await asyncio.open_connection(
                self.target_host, self.target_port
            )
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(link, reader, link.upstream))
                tg.create_task(self._pipe(link, upstream, link.client))
        except* Exception:  # a reset (or refused upstream) on one side resets the other
            _rst(link.client)
            _rst(link.upstream)
        finally:
            self._links.discard(link)
            link.client.close()
            if link.upstream is not None:
                link.upstream.close()

    async def _pipe(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Copy one direction; chunks are timestamped when read and written when due."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(maxsize=64)

        async def read() -> None:
            while data := await reader.read(_CHUNK):
                if self._blackhole:
                    link.tainted = True
                else:
                    await queue.put((loop.time() + self._latency, data))
            if self._blackhole:  # the FIN is lost too; the link waits for heal()
                link.tainted = True
                return
            await queue.put(None)

        async def write() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if self._blackhole:
                    link.tainted = True
                    continue
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # pass a half-close on

        async with asyncio.TaskGroup() as tg:
            tg.create_task(read())
            tg.create_task(write())
