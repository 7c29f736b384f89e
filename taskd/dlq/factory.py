"""Build the configured sink."""

from __future__ import annotations

from taskd.config.settings import DlqSettings
from taskd.dlq.base import DeadLetterSink
from taskd.errors import ConfigError


def make_sink(settings: DlqSettings) -> DeadLetterSink | None:
    """The sink named by ``dlq.sink``; None for ``none`` (rows wait in the outbox)."""
    if settings.sink == "none":
        return None
    if settings.sink == "kafka":
        from taskd.dlq.kafka import KafkaSink

        return KafkaSink(settings)
    if settings.sink == "rabbitmq":
        from taskd.dlq.rabbitmq import RabbitMqSink

        return RabbitMqSink(settings)
    raise ConfigError(f"dlq.sink must be kafka, rabbitmq or none, not {settings.sink!r}")
