"""The settings model. Every field has a default that works for a local run."""

from __future__ import annotations

import msgspec

from taskd.backoff import Backoff


class DatabaseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str = "postgresql://postgres@127.0.0.1:5432/taskd"
    min_connections: int = 2
    max_connections: int = 20
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0
    application_name: str = "taskd"


class RedisSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str = "redis://127.0.0.1:6379/0"
    socket_timeout: float = 5.0
    connect_timeout: float = 2.0


class ApiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1024 * 1024
    max_payload_bytes: int = 256 * 1024
    retry_after_seconds: int = 2
    max_wait_seconds: float = 60.0


class AuthSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # HS256 with this secret is the local default; production sets algorithms and a key or JWKS.
    jwt_secret: str = ""
    algorithms: tuple[str, ...] = ("HS256",)
    public_key: str = ""
    jwks_url: str = ""
    jwks_cache_seconds: float = 300.0
    audience: str = ""
    issuer: str = ""
    leeway_seconds: float = 0.0


class RetrySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_retries: int = 3
    timeout: float = 300.0
    backoff: Backoff = Backoff()


class WorkerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    concurrency: int = 100
    queues: tuple[str, ...] = ("default",)
    handlers: tuple[str, ...] = ()
    lease_seconds: float = 30.0
    lease_batch: int = 100
    lease_loops: int = 2
    idle_wait_seconds: float = 1.0
    shutdown_grace_seconds: float = 30.0
    flush_max_rows: int = 100
    flush_interval_seconds: float = 0.002
    id: str = ""


class PromoterSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    interval_seconds: float = 1.0
    batch_size: int = 500
    reconcile_grace_seconds: float = 5.0
    queues_refresh_seconds: float = 10.0


class DlqSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Dead letters: the outbox is always written; this says where the promoter sends it."""

    sink: str = "kafka"  # kafka | rabbitmq | none (rows wait in the outbox)
    topic: str = "taskd.dlq"
    bootstrap_servers: str = "127.0.0.1:9092"
    # The outbox and the task-id key already make delivery safe; turn this off only for brokers
    # without InitProducerId (e.g. tansu's memory storage in tests).
    idempotent_producer: bool = True
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    # RabbitMQ (sink: rabbitmq): a durable direct exchange and a durable queue bound with the
    # routing key, declared when the sink connects; persistent messages, publisher confirms.
    # The promoter builds its sink and connects once, at start: `sink` and every connection
    # setting (bootstrap_servers, idempotent_producer, security_protocol, sasl_*, ssl_cafile and
    # the rabbitmq_* below) are restart required. batch_size and retry_* apply on the next pass.
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"  # restart required
    rabbitmq_exchange: str = "taskd.dlq"  # restart required
    rabbitmq_queue: str = "taskd.dlq"  # restart required
    rabbitmq_routing_key: str = "taskd.dlq"  # restart required
    # Both sinks: connecting, and waiting for the broker's acks (Kafka) or confirms (RabbitMQ).
    publish_timeout_seconds: float = 10.0
    batch_size: int = 100
    interval_seconds: float = 1.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0


class OpsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The /metrics, /healthz, /readyz server of roles other than api."""

    host: str = "127.0.0.1"
    port: int = 9464


class LogSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    level: str = "INFO"
    json: bool = True


class SsmSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """AWS SSM Parameter Store, the top configuration source (DESIGN §7): each parameter under
    ``prefix`` sets one setting (``/taskd/prod/worker/concurrency`` -> ``worker.concurrency``).

    Read from defaults, YAML, the environment and flags only (never from SSM itself); restart
    required. Credentials come from the AWS default chain (environment, profile, instance role).
    """

    prefix: str = ""  # e.g. /taskd/prod; empty: SSM is not read
    region: str = ""  # empty: the AWS default chain (AWS_REGION, AWS_DEFAULT_REGION, profile)
    endpoint_url: str = ""  # empty: AWS's own endpoint
    poll_interval_seconds: float = 30.0
    timeout_seconds: float = 5.0  # connect and read timeout of each call


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    retry: RetrySettings = RetrySettings()
    worker: WorkerSettings = WorkerSettings()
    promoter: PromoterSettings = PromoterSettings()
    dlq: DlqSettings = DlqSettings()
    ops: OpsSettings = OpsSettings()
    log: LogSettings = LogSettings()
    ssm: SsmSettings = SsmSettings()


# Settings a running process applies without a restart (DESIGN §7): a reload swaps them into the
# snapshot and the roles' subscribers act on them. Dotted paths; a section or struct name covers
# everything under it. Every other setting (connections, ports, queues, handlers, the SSM source
# itself, ...) needs a restart: a reload that changes one logs "restart required" and keeps the
# running value. A path added here needs a subscriber in taskd/roles/ that applies it.
RUNTIME_TUNABLE: frozenset[str] = frozenset(
    {
        "worker.concurrency",  # Worker.retune -> Slots.resize
        "retry",  # defaults of the worker (backoff, run defaults) and the promoter (reaper, DLQ)
        "dlq.batch_size",  # DlqPublisher reads these on every pass
        "dlq.retry_base_seconds",
        "dlq.retry_max_seconds",
        "log.level",  # the root logger
        "notify",  # the notifier and the task store's notification defaults (roles/notifier.py)
    }
)


def needs_restart(path: str) -> bool:
    """Whether a change to the setting at dotted ``path`` takes a restart to apply."""
    parts = path.split(".")
    return not any(".".join(parts[:i]) in RUNTIME_TUNABLE for i in range(1, len(parts) + 1))
