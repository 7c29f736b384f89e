"""Latency: submit -> handler start at a steady rate, api and worker as separate processes.

    python -m bench.latency [--rate 200] [--seconds 10] [--concurrency 200]

Starts one ``taskd --role api`` and one ``taskd --role worker --concurrency 200`` process on a
scratch database and a scratch queue, then submits ``bench.latency`` tasks open-loop: sends
follow a fixed timetable (``rate`` per second) and never wait for earlier answers. Each payload
carries the client's ``time.time()`` taken just before the request's bytes are written; the
handler (bench/handlers.py) records ``time.time() - sent`` when it starts, in a Redis list in
db 9. Prints p50/p90/p99/max of send -> handler start, and of send -> 201 for comparison.

The client is a few lines of HTTP/1.1 over keep-alive connections rather than aiohttp's client,
whose own request building (~0.1-0.2 ms of Python before the first byte is written) would be
counted as the system's latency. A first second of the same traffic warms up connections and
caches and is not counted. ``measure()`` returns the figures as a dict for an orchestrator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from bench.common import (
    REDIS_URL,
    box_cpu,
    cpu_seconds,
    free_port,
    other_cores,
    proc_cpu,
    scratch_database,
)
from bench.submit import Api, drop_queue_keys, role_env, role_process, running_api, wait_ready

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99 and the max, in milliseconds."""
    s = sorted(values)

    def rank(p: float) -> float:
        return s[max(0, min(len(s) - 1, round(p * len(s) + 0.5) - 1))] * 1000

    return {
        "p50_ms": rank(0.50),
        "p90_ms": rank(0.90),
        "p99_ms": rank(0.99),
        "max_ms": s[-1] * 1000,
    }


class Client:
    """POST /v1/tasks over a pool of keep-alive HTTP/1.1 connections (one request at a time on
    each; a new connection when all are busy)."""

    def __init__(self, api: Api) -> None:
        url = urlsplit(api.base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.head = (
            f"POST /v1/tasks HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {api.token}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.idle: list[Stream] = []

    async def post(self, make_body: Callable[[], bytes]) -> int:
        """Send the body ``make_body()`` returns (called once a connection is at hand, right
        before writing); returns the answer's status."""
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        body = make_body()
        writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        self.idle.append(conn)
        return int(head.split(b" ", 2)[1])

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def open_loop(
    client: Client, queue: str, list_key: str, rate: float, seconds: float, first_seq: int
) -> tuple[dict[int, float], list[int]]:
    """Send ``rate * seconds`` submissions on a fixed timetable; returns, by sequence number,
    how long each took to answer, and every answer's status."""
    answered: dict[int, float] = {}
    statuses: list[int] = []
    template = json.dumps(
        {"type": "bench.latency", "queue": queue, "payload": {"seq": 0, "list": list_key}}
    )
    prefix, suffix = template.split('"seq": 0')

    async def send(seq: int) -> None:
        sent = 0.0

        def body() -> bytes:
            nonlocal sent
            sent = time.time()
            return f'{prefix}"seq": {seq}, "sent": {sent!r}{suffix}'.encode()

        statuses.append(await client.post(body))
        answered[seq] = time.time() - sent

    loop = asyncio.get_running_loop()
    n = int(rate * seconds)
    start = loop.time() + 0.05
    pending = []
    for i in range(n):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(send(first_seq + i)))
    await asyncio.gather(*pending)
    return answered, statuses


async def started_lags(list_key: str, n: int, within: float = 60.0) -> dict[int, float]:
    """Send -> handler start of ``n`` tasks, by sequence number, once all have started."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with asyncio.timeout(within):
            while await client.llen(list_key) < n:
                await asyncio.sleep(0.05)
        out = {}
        for item in await client.lrange(list_key, 0, -1):
            seq, lag = item.split()
            out[int(seq)] = float(lag)
        await client.delete(list_key)
        return out
    finally:
        await client.aclose()


def ours(*pids: int) -> float:
    """CPU seconds so far of the processes the measurement involves (this one included)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    db_and_queue = cpu_seconds("postgres") + cpu_seconds("redis-server")
    return sum(proc_cpu(p) for p in pids) + db_and_queue + me.ru_utime + me.ru_stime


async def measure_async(
    rate: float = 200.0, seconds: float = 10.0, concurrency: int = 200, warmup: float = 1.0
) -> dict[str, Any]:
    """Run the measurement against fresh api and worker processes; returns the figures."""
    queue = f"bench-{secrets.token_hex(4)}"
    key = f"taskd-bench:latency:{secrets.token_hex(4)}"
    async with scratch_database() as db_url, running_api(db_url, queue) as api:
        env = role_env(db_url, queue, "unused", free_port())
        env["TASKD_OPS__PORT"] = str(free_port())
        env["TASKD_BENCH_REDIS_URL"] = REDIS_URL
        args = ["--role", "worker", "--handlers", "bench.handlers", "--concurrency"]
        with role_process([*args, str(concurrency)], env) as worker:
            client = Client(api)
            try:
                await wait_ready(f"http://127.0.0.1:{env['TASKD_OPS__PORT']}", worker)
                # Warm-up: the same traffic, waited for, then forgotten.
                _, codes = await open_loop(client, queue, key, rate, warmup, 0)
                await started_lags(key, len(codes))
                before = ours(api.proc.pid, worker.pid), box_cpu()
                answered, codes = await open_loop(client, queue, key, rate, seconds, 10**6)
                after = ours(api.proc.pid, worker.pid), box_cpu()
                started = await started_lags(key, len(answered))
            finally:
                await client.close()
                await drop_queue_keys(queue)
    cores = other_cores(before[1], after[1], after[0] - before[0])
    return summary(rate, seconds, answered, codes, started, cores)


def summary(
    rate: float,
    seconds: float,
    answered: dict[int, float],
    codes: list[int],
    started: dict[int, float],
    cores: float,
) -> dict[str, Any]:
    """One measurement's figures: send -> start and send -> 201 percentiles and counts."""
    return {
        "rate": rate,
        "seconds": seconds,
        "tasks": len(answered),
        "non_201": sum(c != 201 for c in codes),
        "submit_to_start": percentiles(list(started.values())),
        "submit_to_201": percentiles(list(answered.values())),
        "other_cores": cores,
    }


def measure(**kwargs: Any) -> dict[str, Any]:
    """Synchronous :func:`measure_async` for callers without an event loop (on uvloop when it
    is installed: the client's own overhead is part of what it measures)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(measure_async(**kwargs))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(measure_async(**kwargs))


def print_table(f: dict[str, Any]) -> None:
    print(
        f"\nlatency: {f['tasks']} tasks at {f['rate']:g}/s open-loop, 1 api + 1 worker process"
        f" ({f['non_201']} answers other than 201; other processes used"
        f" {f['other_cores']:.2f} cores meanwhile)"
    )
    print(f"{'':<24} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for key, label in (
        ("submit_to_start", "send -> handler start"),
        ("submit_to_201", "send -> 201"),
    ):
        p = f[key]
        print(
            f"{label:<24} {p['p50_ms']:>8.2f} {p['p90_ms']:>8.2f} {p['p99_ms']:>8.2f} "
            f"{p['max_ms']:>8.2f}"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="submissions per second")
    p.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    p.add_argument("--concurrency", type=int, default=200, help="worker slots")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    a = p.parse_args()
    result = measure(rate=a.rate, seconds=a.seconds, concurrency=a.concurrency)
    print_table(result)
    if a.json:
        print(json.dumps(result, indent=2))
