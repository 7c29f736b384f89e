"""The settings model. Every field has a default that works for a local run."""

from __future__ import annotations

import msgspec

from taskd.backoff import Backoff
from taskd.schedule.spec import ScheduleSpec


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


class NotifyRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A configured default: notify these targets whenever a matching task ends."""

    # SUCCESS and/or FAILED. (Not "on": YAML reads an unquoted `on:` key as true.)
    statuses: tuple[str, ...] = ("FAILED",)
    types: tuple[str, ...] = ("*",)  # task types; "*" matches any run of characters
    queues: tuple[str, ...] = ()  # empty: every queue
    email: tuple[str, ...] = ()
    webhook: str = ""

    def __post_init__(self) -> None:
        if not self.statuses or not set(self.statuses) <= {"SUCCESS", "FAILED"}:
            raise ValueError("notify.defaults[].statuses takes SUCCESS and/or FAILED")
        if not self.email and not self.webhook:
            raise ValueError("notify.defaults[] needs an email list or a webhook")
        if self.webhook and not self.webhook.startswith(("https://", "http://")):
            raise ValueError("notify.defaults[].webhook must be an http(s) URL")


class SmtpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 25
    security: str = "none"  # none | starttls | tls (implicit TLS, usually port 465)
    username: str = ""  # login when set
    password: str = ""
    sender: str = "taskd@localhost"  # the From address
    validate_certs: bool = True
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.security not in ("none", "starttls", "tls"):
            raise ValueError("notify.smtp.security is one of none, starttls, tls")


class WebhookSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Standard Webhooks form "whsec_<base64 key>", or any other text used as the key's bytes.
    secret: str = ""
    timeout_seconds: float = 10.0
    # Destinations are refused when they resolve to a private, loopback, link-local, metadata or
    # otherwise non-public address, unless that address is inside one of these networks.
    allow: tuple[str, ...] = ()  # e.g. ["127.0.0.1/32", "10.20.0.0/16"]

    def __post_init__(self) -> None:
        import ipaddress

        for net in self.allow:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad network


class NotifySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Email and webhook notifications (the notifier role, and the email.send/http.request
    built-in handlers). Everything here is read where it is used: no restart needed."""

    smtp: SmtpSettings = SmtpSettings()
    webhook: WebhookSettings = WebhookSettings()
    defaults: tuple[NotifyRule, ...] = ()
    max_attempts: int = 10  # then the notification is marked dead
    retry_base_seconds: float = 5.0  # delay before retry n: min(max, base * 2^(n-1))
    retry_max_seconds: float = 1800.0
    batch_size: int = 20  # rows claimed (and delivered concurrently) per pass
    poll_interval_seconds: float = 5.0  # LISTEN/NOTIFY wakes the notifier; this is the fallback
    log_lines: int = 20  # last lines of the task's log shown in an email

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.batch_size < 1:
            raise ValueError("notify.max_attempts and notify.batch_size must be >= 1")


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


class UiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The dashboard the api role serves at ``/ui`` (restart required)."""

    enabled: bool = True
    read_only: bool = False  # no action anywhere, whatever the signed-in token's scopes
    session_seconds: float = 8 * 3600.0  # a session also ends when its token expires
    # Secure cookies always; otherwise only when the request itself came over TLS.
    cookie_secure: bool = False
    login_link_seconds: float = 600.0  # how long a `taskd token --ui` link may be used (once)
    live_interval_seconds: float = 1.0  # the one poller per process behind every live page
    redrive_max: int = 1000  # tasks one dead-letter redrive may touch
    redrive_per_second: float = 200.0  # pace of bulk redrives, per api process

    def __post_init__(self) -> None:
        if self.session_seconds <= 0 or self.live_interval_seconds <= 0:
            raise ValueError("ui.session_seconds and ui.live_interval_seconds must be > 0")
        if self.redrive_max < 1 or self.redrive_per_second <= 0:
            raise ValueError("ui.redrive_max must be >= 1 and ui.redrive_per_second > 0")


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    retry: RetrySettings = RetrySettings()
    worker: WorkerSettings = WorkerSettings()
    promoter: PromoterSettings = PromoterSettings()
    dlq: DlqSettings = DlqSettings()
    notify: NotifySettings = NotifySettings()
    ops: OpsSettings = OpsSettings()
    log: LogSettings = LogSettings()
    ssm: SsmSettings = SsmSettings()
    ui: UiSettings = UiSettings()
    # Schedules declared here are upserted by name when a promoter starts (restart required).
    schedules: tuple[ScheduleSpec, ...] = ()


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
