"""The one exception tree of taskd.

Adapters translate driver errors (asyncpg, redis-py, aiohttp) into these at the boundary
(``raise ... from e``), so services and roles never catch a driver's exception type.
"""

from __future__ import annotations


class TaskdError(Exception):
    """A taskd operation failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class ConfigError(TaskdError):
    """The configuration is invalid."""


class ConfigSourceUnavailable(ConfigError):
    """A configuration source (AWS SSM Parameter Store) cannot be read."""


class DependencyUnavailable(TaskdError):
    """A backing service (Postgres or Redis) cannot be reached."""


class DatabaseUnavailable(DependencyUnavailable):
    """PostgreSQL cannot be reached."""


class QueueUnavailable(DependencyUnavailable):
    """Redis cannot be reached."""


class SinkUnavailable(DependencyUnavailable):
    """The dead-letter sink (Kafka or RabbitMQ) cannot be reached or did not confirm."""


class LeaseLost(TaskdError):
    """The lease is held by another worker (or was reclaimed)."""


class ScriptError(TaskdError):
    """A Redis script returned an unexpected status."""


class HandlerError(TaskdError):
    """Handler registration or lookup failed."""


class DuplicateHandler(HandlerError):
    """Two handlers were registered under one task type."""


class DeliveryFailed(TaskdError):
    """A notification (or a built-in handler's email or HTTP call) was not delivered.

    ``permanent`` says that trying again cannot help (the notifier marks the row dead at once).
    """

    permanent = False


class DeliveryRefused(DeliveryFailed):
    """The message can never be delivered as addressed."""

    permanent = True


class InvalidAddress(DeliveryRefused):
    """Not a deliverable email address."""


class DestinationRefused(DeliveryRefused):
    """The destination resolves to an address that the outbound policy refuses."""


class NonRetryableError(Exception):
    """Raised by a handler: fail the task now, without further retries.

    Deliberately not a TaskdError: handlers raise it, taskd never does.
    """
