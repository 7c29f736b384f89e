"""Dead-letter sinks behind one small interface (DESIGN §2): Kafka, or RabbitMQ."""

from taskd.dlq.base import DeadLetter, DeadLetterSink

__all__ = ["DeadLetter", "DeadLetterSink"]
