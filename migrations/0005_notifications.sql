-- Notifications (DESIGN §5, Notify): the outbox rows written in the transaction that records a
-- task's SUCCESS or FAILED, the notifier's record of every delivery attempt, and the last log
-- lines of each attempt (the email shows them).

-- What the handler kept with ctx.log (the last lines only); NULL when it kept nothing.
ALTER TABLE attempts ADD COLUMN log jsonb;

CREATE TABLE notify_outbox (
    id              bigserial   PRIMARY KEY,
    -- The webhook-id header (and the email's Message-ID): the same on every retry, so a
    -- receiver can drop a duplicate delivery.
    message_id      uuid        NOT NULL DEFAULT gen_random_uuid(),
    task_id         uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    -- The attempt whose outcome ended the task: a redriven task that ends again notifies again.
    task_attempt    integer     NOT NULL,
    event_status    text        NOT NULL CHECK (event_status IN ('SUCCESS', 'FAILED')),
    channel         text        NOT NULL CHECK (channel IN ('email', 'webhook')),
    target          text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'dead')),
    -- Rendered at the first delivery attempt, so that every retry sends the same message.
    content         text,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);
-- One notification per (task end, channel, target), however many rules asked for it.
CREATE UNIQUE INDEX notify_outbox_once ON notify_outbox (task_id, task_attempt, channel, target);
-- The notifier claims due, pending rows in order.
CREATE INDEX notify_outbox_due ON notify_outbox (next_attempt_at, id) WHERE state = 'pending';

CREATE TABLE notify_attempts (
    outbox_id   bigint      NOT NULL REFERENCES notify_outbox (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    -- delivered; failed (retried later); abandoned (the last failure: the row is dead).
    outcome     text        NOT NULL CHECK (outcome IN ('delivered', 'failed', 'abandoned')),
    detail      text,
    PRIMARY KEY (outbox_id, attempt)
);

-- Wake the notifiers (LISTEN taskd_notify) when rows commit. A row trigger fires only when a
-- notification is actually written, so completions without one pay nothing; NOTIFY folds the
-- identical payloads of one transaction into one.
CREATE FUNCTION taskd_notify_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskd_notify', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER notify_outbox_wake AFTER INSERT ON notify_outbox
    FOR EACH ROW EXECUTE FUNCTION taskd_notify_wake();
