-- The dead-letter outbox (DESIGN §2, §5): written in the transaction that marks a task FAILED,
-- published by the promoter to the configured sink (Kafka or RabbitMQ), then marked.

CREATE TABLE dlq_outbox (
    id              bigserial   PRIMARY KEY,
    task_id         uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    publish_attempts integer    NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
-- The publisher claims due, unpublished rows in order.
CREATE INDEX dlq_outbox_due ON dlq_outbox (next_attempt_at, id) WHERE published_at IS NULL;
