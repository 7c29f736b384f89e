-- The audit log of actions that change tasks (cancel, retry, bulk redrive), written by the API
-- and the dashboard, and the indexes the dashboard's views need to stay fast on large tables.

CREATE TABLE audit_log (
    id        bigserial   PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text        NOT NULL,  -- the token's sub
    tenant    text        NOT NULL,  -- the actor's tenant (an admin acts on every tenant)
    via       text        NOT NULL CHECK (via IN ('api', 'ui')),
    action    text        NOT NULL,  -- cancel, retry, redrive, bulk_cancel, bulk_retry, ...
    -- What was asked: the filter or group of a bulk action, or null for one task.
    filter    jsonb,
    -- The tasks changed (capped by the caller) and how many there were.
    task_ids  uuid[]      NOT NULL DEFAULT '{}',
    count     integer     NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant, id);
CREATE INDEX audit_log_tasks ON audit_log USING gin (task_ids);

-- Dead letters for an admin (every tenant) newest first; tenants use tasks_tenant_status.
CREATE INDEX tasks_failed ON tasks (id) WHERE status = 'FAILED';
-- Recent attempts (throughput, lease reclaims) and recent dead letters by time. Both tables are
-- append-mostly in time order, so a BRIN index is tiny and costs the hot path next to nothing.
CREATE INDEX attempts_finished_brin ON attempts USING brin (finished_at);
CREATE INDEX dlq_outbox_created_brin ON dlq_outbox USING brin (created_at);

-- Dead letters are grouped by type, error type and this pattern of the error message: ids and
-- numbers are masked, so "order 123 timed out" and "order 456 timed out" are one group. One
-- definition, used by the grouping and by the redrive of a group alike.
CREATE FUNCTION taskd_error_pattern(message text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
    left(regexp_replace(
        regexp_replace(coalesce(message, ''),
                       '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}',
                       '<id>', 'g'),
        '[0-9]+', '<n>', 'g'), 200);
