"""Kafka sink: aiokafka producer with acks=all (idempotent by default), key = task id."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from taskd.config.settings import DlqSettings
from taskd.dlq.base import DeadLetter
from taskd.errors import SinkUnavailable

log = logging.getLogger("taskd.dlq")


class KafkaSink:
    def __init__(self, settings: DlqSettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    def _options(self) -> dict[str, Any]:
        s = self.settings
        opts: dict[str, Any] = {
            "bootstrap_servers": s.bootstrap_servers,
            "acks": "all",
            "enable_idempotence": s.idempotent_producer,
            "request_timeout_ms": int(s.publish_timeout_seconds * 1000),
            "security_protocol": s.security_protocol,
        }
        if s.sasl_mechanism:
            opts |= {
                "sasl_mechanism": s.sasl_mechanism,
                "sasl_plain_username": s.sasl_username,
                "sasl_plain_password": s.sasl_password,
            }
        if s.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            opts["ssl_context"] = create_ssl_context(cafile=s.ssl_cafile or None)
        return opts

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._options())
        try:
            await asyncio.wait_for(producer.start(), self.settings.publish_timeout_seconds)
        except (KafkaError, OSError, TimeoutError) as e:
            await producer.stop()
            raise SinkUnavailable(f"Kafka at {self.settings.bootstrap_servers}: {e!r}") from e
        self._producer = producer

    async def publish(self, letters: list[DeadLetter]) -> None:
        await self.start()
        assert self._producer is not None
        topic = self.settings.topic
        try:
            sends = [
                await self._producer.send(
                    topic,
                    value=d.value,
                    key=d.task_id.encode(),
                    headers=[(k, v.encode()) for k, v in d.headers],
                )
                for d in letters
            ]
            timeout = self.settings.publish_timeout_seconds
            await asyncio.wait_for(asyncio.gather(*sends), timeout)
        except (KafkaError, OSError, TimeoutError) as e:
            # The connection may be wedged: start afresh on the next try.
            await self.close()
            raise SinkUnavailable(f"Kafka publish failed: {e!r}") from e

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 5)
            except (KafkaError, OSError, TimeoutError) as e:
                log.warning("closing the Kafka producer: %r", e)
