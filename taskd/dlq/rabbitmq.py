"""RabbitMQ sink (DESIGN §2, API.md "Dead letters"): aio-pika, publisher confirms.

At connect the sink declares a durable direct exchange and a durable queue (names and routing
key from ``dlq.rabbitmq_*``) and binds them; every publish pass re-asserts the queue and its
binding (idempotent declares, one round trip each), so a queue deleted by hand is back before
the next dead letter. Messages are persistent and published ``mandatory``; a pass counts as
delivered only when the broker confirmed every message (``Basic.Ack``). A ``Basic.Nack`` (e.g. a
full queue with ``overflow: reject-publish``), a ``Basic.Return`` (no queue bound), a closed
channel (the exchange vanished), a lost connection or no confirmation within
``publish_timeout_seconds`` raises SinkUnavailable: the outbox keeps the rows and retries them
with backoff on a fresh connection. A message may so arrive twice; ``message_id`` (the task id)
lets consumers dedupe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelNotFoundEntity
from yarl import URL

from taskd.config.settings import DlqSettings
from taskd.dlq.base import DeadLetter
from taskd.errors import ConfigError, SinkUnavailable

log = logging.getLogger("taskd.dlq")

# What aio-pika/aiormq raise for a broker that is down, refuses, or closed the channel: AMQP
# errors (Nack, Return, channel and connection closes), OSError (resets, refusals, timeouts),
# RuntimeError (a channel already closed under us).
ERRORS: tuple[type[BaseException], ...] = CONNECTION_EXCEPTIONS


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    u = URL(url)
    return str(u.with_password("***")) if u.password else str(u)


def check(settings: DlqSettings) -> None:
    """Refuse settings that cannot work (the default exchange cannot be declared or bound)."""
    s = settings
    missing = [
        name
        for name, value in (
            ("rabbitmq_exchange", s.rabbitmq_exchange),
            ("rabbitmq_queue", s.rabbitmq_queue),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"dlq.sink rabbitmq needs dlq.{' and dlq.'.join(missing)}")


def message(letter: DeadLetter) -> aio_pika.Message:
    """The message of API.md: the Kafka value as body, task id as message_id, persistent."""
    return aio_pika.Message(
        body=letter.value,
        message_id=letter.task_id,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=dict(letter.headers),
    )


async def _connect(settings: DlqSettings) -> AbstractConnection:
    """A plain (not robust) connection: the outbox retries, so the sink reconnects per pass
    after a failure instead of replaying anything in the background."""
    return await aio_pika.connect(
        settings.rabbitmq_url,
        timeout=settings.publish_timeout_seconds,
        client_properties={"connection_name": "taskd dlq"},
    )


async def declare_exchange(channel: AbstractChannel, settings: DlqSettings) -> AbstractExchange:
    return await channel.declare_exchange(
        settings.rabbitmq_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )


class RabbitMqSink:
    def __init__(self, settings: DlqSettings) -> None:
        check(settings)
        self.settings = settings
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractQueue | None = None

    async def start(self) -> None:
        if self._connection is not None:
            if not self._connection.is_closed:
                return
            await self.close()  # the broker or the network closed it: connect afresh
        s = self.settings
        try:
            async with asyncio.timeout(s.publish_timeout_seconds):
                connection = await _connect(s)
                try:
                    channel = await connection.channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    self._exchange = await declare_exchange(channel, s)
                    self._queue = await channel.declare_queue(s.rabbitmq_queue, durable=True)
                    await self._queue.bind(self._exchange, s.rabbitmq_routing_key)
                except BaseException:
                    await _close_quietly(connection, s.publish_timeout_seconds)
                    raise
        except ERRORS as e:
            self._exchange = self._queue = None
            raise SinkUnavailable(f"RabbitMQ at {safe_url(s.rabbitmq_url)}: {e!r}") from e
        self._connection = connection

    async def publish(self, letters: list[DeadLetter]) -> None:
        await self.start()
        assert self._exchange is not None and self._queue is not None
        exchange, queue, key = self._exchange, self._queue, self.settings.rabbitmq_routing_key
        try:
            async with asyncio.timeout(self.settings.publish_timeout_seconds):
                await queue.declare()
                await queue.bind(exchange, key)
                results = await asyncio.gather(
                    *(exchange.publish(message(d), key, mandatory=True) for d in letters),
                    return_exceptions=True,
                )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
        except TimeoutError as e:
            await self.close()
            timeout = self.settings.publish_timeout_seconds
            raise SinkUnavailable(f"RabbitMQ did not confirm within {timeout}s") from e
        except ERRORS as e:
            # Some messages may be confirmed and some not: the whole batch is retried (the
            # message id dedupes). The channel may be closed or wedged: start afresh.
            await self.close()
            raise SinkUnavailable(f"RabbitMQ publish not confirmed: {e!r}") from e

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._exchange = self._queue = None
        if connection is not None:
            await _close_quietly(connection, self.settings.publish_timeout_seconds)


async def _close_quietly(connection: AbstractConnection, grace: float) -> None:
    try:
        await asyncio.wait_for(connection.close(), grace)
    except ERRORS as e:
        log.warning("closing the RabbitMQ connection: %r", e)


def document(msg: AbstractIncomingMessage) -> dict[str, Any]:
    """What ``taskd dlq tail`` prints for a message: the Kafka tail's shape (key = task id)."""
    doc = json.loads(msg.body)
    return {"key": msg.message_id, **doc}


async def tail(
    settings: DlqSettings,
    from_beginning: bool,
    emit: Callable[[dict[str, Any]], bool],
    following: Callable[[], None] = lambda: None,
) -> None:
    """Show dead letters without taking them from the queue's consumers.

    New ones: a private server-named queue (exclusive, auto-delete) bound to the exchange with
    the routing key receives a copy of each message published from now on; the durable queue
    is not touched, so no consumer loses or waits for a message. With ``from_beginning``, what
    waits in the durable queue is shown first by a peek: ``basic.get`` without ack up to the
    queue's message count, then every one is nacked with requeue (back in place, flagged
    redelivered). The private queue is bound before the peek so nothing falls between the two;
    a message seen by both is shown once. ``emit`` returns False to stop; ``following`` is
    called once the peek is done and new messages are being waited for.
    """
    s = settings
    try:
        connection = await _connect(s)
    except ERRORS as e:
        raise SinkUnavailable(f"RabbitMQ at {safe_url(s.rabbitmq_url)}: {e!r}") from e
    async with connection:
        channel = await connection.channel()
        exchange = await declare_exchange(channel, s)
        follow = await channel.declare_queue(exclusive=True, auto_delete=True)
        await follow.bind(exchange, s.rabbitmq_routing_key)
        seen: set[tuple[str | None, bytes]] = set()
        if from_beginning:
            peeked, go_on = await _peek(connection, s.rabbitmq_queue, emit)
            if not go_on:
                return
            seen = {(m.message_id, m.body) for m in peeked}
        following()
        async with follow.iterator(no_ack=True) as messages:
            async for msg in messages:
                if (msg.message_id, msg.body) in seen:
                    continue
                if not emit(document(msg)):
                    return


async def _peek(
    connection: AbstractConnection,
    queue_name: str,
    emit: Callable[[dict[str, Any]], bool],
) -> tuple[list[AbstractIncomingMessage], bool]:
    """Show what waits in ``queue_name`` and put all of it back; False: ``emit`` said stop."""
    channel = await connection.channel()
    held: list[AbstractIncomingMessage] = []
    go_on = True
    try:
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
        except ChannelNotFoundEntity:
            return held, True  # not declared yet: nothing waits
        result = queue.declaration_result
        waiting = (result.message_count or 0) if result is not None else 0
        for _ in range(waiting):
            msg = await queue.get(no_ack=False, fail=False)
            if msg is None:
                break
            held.append(msg)
            if not emit(document(msg)):
                go_on = False
                break
        return held, go_on
    finally:
        if held and not channel.is_closed:
            await held[-1].nack(multiple=True, requeue=True)
        with contextlib.suppress(*ERRORS):
            await channel.close()
