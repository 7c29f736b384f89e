"""``taskd dlq tail|list|retry``: watch the dead-letter sink, and redrive in bulk.

``tail`` reads whichever sink ``dlq.sink`` names: the Kafka topic (a consumer without a group,
so it commits nothing), or RabbitMQ without taking messages from the queue's consumers (see
taskd.dlq.rabbitmq.tail).

``list`` and ``retry`` read Postgres directly (an operator's tool, with the service's database
credentials); ``--dry-run`` shows what a retry would touch without changing anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from taskd.config import Settings
from taskd.errors import ConfigError

FILTER_KEYS = ("type", "queue", "tenant", "since", "error")
LIST_SQL = """
SELECT id, tenant, type, queue, attempt, finished_at, error FROM tasks
WHERE status = 'FAILED'
  AND ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR tenant = $3) AND ($4::timestamptz IS NULL OR finished_at >= $4)
  AND ($5::text IS NULL OR error->>'message' ILIKE '%' || $5 || '%')
ORDER BY id DESC LIMIT $6
"""


def setup(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    tail = sub.add_parser("tail", help="print dead letters as they reach the sink")
    tail.add_argument(
        "--from-beginning",
        action="store_true",
        help="Kafka: from the topic's start; RabbitMQ: first what waits in the queue (peeked "
        "and put back)",
    )
    tail.add_argument("--max", type=int, default=0, help="stop after this many (0: forever)")
    for name, text in (("list", "list FAILED tasks"), ("retry", "redrive FAILED tasks")):
        q = sub.add_parser(name, help=text)
        q.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"repeatable; KEY is one of {', '.join(FILTER_KEYS)}",
        )
        q.add_argument("--limit", type=int, default=100)
        if name == "retry":
            q.add_argument("--dry-run", action="store_true", help="show, change nothing")


def parse_filters(items: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = dict.fromkeys(FILTER_KEYS)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in FILTER_KEYS:
            raise ConfigError(f"--filter {item!r}: use KEY=VALUE with KEY in {FILTER_KEYS}")
        found[key] = datetime.fromisoformat(value) if key == "since" else value
    return found


async def main(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "tail":
        return await tail(settings, args)
    return await list_or_retry(settings, args)


async def tail(settings: Settings, args: argparse.Namespace) -> int:
    """Print dead letters, one JSON object per line (``key`` = the task id), from the sink."""
    d = settings.dlq
    seen = 0

    def emit(doc: dict[str, Any]) -> bool:
        nonlocal seen
        print(json.dumps(doc))
        sys.stdout.flush()
        seen += 1
        return not (args.max and seen >= args.max)

    if d.sink == "kafka":
        await _tail_kafka(settings, args.from_beginning, emit)
        return 0
    if d.sink == "rabbitmq":
        from taskd.dlq import rabbitmq

        rabbitmq.check(d)

        def following() -> None:
            print(
                f"following exchange {d.rabbitmq_exchange!r} "
                f"(routing key {d.rabbitmq_routing_key!r})",
                file=sys.stderr,
                flush=True,
            )

        await rabbitmq.tail(d, args.from_beginning, emit, following)
        return 0
    print(f"taskd dlq tail reads Kafka or RabbitMQ; dlq.sink is {d.sink!r}", file=sys.stderr)
    return 2


async def _tail_kafka(
    settings: Settings, from_beginning: bool, emit: Callable[[dict[str, Any]], bool]
) -> None:
    from aiokafka import AIOKafkaConsumer

    d = settings.dlq
    consumer = AIOKafkaConsumer(
        d.topic,
        bootstrap_servers=d.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    try:
        async for record in consumer:
            doc = json.loads(record.value)
            if not emit({"key": record.key.decode() if record.key else None, **doc}):
                break
    finally:
        await consumer.stop()


async def list_or_retry(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg

    f = parse_filters(args.filter)
    conn = await asyncpg.connect(settings.database.url)
    try:
        rows = await conn.fetch(
            LIST_SQL, f["type"], f["queue"], f["tenant"], f["since"], f["error"], args.limit
        )
    finally:
        await conn.close()
    for r in rows:
        message = json.loads(r["error"])["message"] if r["error"] else ""
        print(
            f"{r['id']}  {r['type']:<24} {r['queue']:<12} attempts={r['attempt']:<3} "
            f"{r['finished_at']:%Y-%m-%d %H:%M:%S}  {message[:60]}"
        )
    if args.action == "list" or args.dry_run:
        print(f"would redrive {len(rows)}" if args.action == "retry" else f"{len(rows)} FAILED")
        return 0
    redriven = await _redrive(settings, [r["id"] for r in rows])
    print(f"redrove {redriven} of {len(rows)}")
    return 0


async def _redrive(settings: Settings, ids: list[Any]) -> int:
    from taskd.queue.client import RedisQueue, pending_entries
    from taskd.store.dags import DagStore
    from taskd.store.pool import create_pool
    from taskd.store.tasks import TaskStore

    pool = await create_pool(settings.database)
    queue = RedisQueue.from_url(settings.redis.url)
    done = 0
    try:
        dags = DagStore(TaskStore(pool))
        for task_id in ids:
            row = await dags.redrive(task_id, None)
            if row is None:
                continue  # redriven or changed meanwhile
            done += 1
            await queue.enqueue_grouped(pending_entries([row]))
    finally:
        await queue.close()
        await pool.close()
    return done
