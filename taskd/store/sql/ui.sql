-- Named queries of the dashboard (taskd/ui) and of GET /v1/tasks/{id}/explain.
-- Each block starts with "-- name: <name>".

-- name: count_tasks_capped
-- How many tasks match a list filter, counting no further than $9 (the page says "10,000+").
SELECT count(*)::int FROM (
    SELECT 1 FROM tasks
    WHERE ($1::text IS NULL OR tenant = $1)
      AND ($2::text IS NULL OR status = $2)
      AND ($3::text IS NULL OR type = $3)
      AND ($4::text IS NULL OR queue = $4)
      AND ($5::uuid IS NULL OR dag_id = $5)
      AND ($6::jsonb IS NULL OR labels @> $6)
      AND ($7::timestamptz IS NULL OR created_at > $7)
      AND ($8::timestamptz IS NULL OR created_at < $8)
    LIMIT $9
) capped;

-- name: find_by_key_in_tenant
SELECT id FROM tasks WHERE tenant = $2 AND idempotency_key = $1;

-- name: find_by_key_any_tenant
-- An admin looks a key up in every tenant: a loose index scan over tasks_tenant enumerates the
-- tenants (one probe each), then tasks_idempotency answers per tenant.
WITH RECURSIVE tenants(t) AS (
    (SELECT tenant FROM tasks ORDER BY tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT tenant FROM tasks WHERE tenant > tenants.t ORDER BY tenant LIMIT 1)
    FROM tenants WHERE tenants.t IS NOT NULL
)
SELECT x.id FROM tenants,
    LATERAL (SELECT id FROM tasks WHERE tenant = tenants.t AND idempotency_key = $1) x
LIMIT 20;

-- name: task_attempts
SELECT * FROM attempts WHERE task_id = $1 ORDER BY attempt;

-- name: parents
SELECT p.id, p.dag_key, p.type, p.status, p.finished_at
FROM edges e JOIN tasks p ON p.id = e.parent
WHERE e.child = $1
ORDER BY p.id;

-- name: children
SELECT c.id, c.dag_key, c.type, c.status
FROM edges e JOIN tasks c ON c.id = e.child
WHERE e.parent = $1
ORDER BY c.id
LIMIT $2;

-- name: dlq_publish_state
SELECT created_at, published_at, publish_attempts, next_attempt_at, last_error
FROM dlq_outbox WHERE task_id = $1 ORDER BY id DESC LIMIT 10;

-- name: notifications
SELECT id, task_attempt, event_status, channel, target, state, attempts, created_at,
       delivered_at, last_error
FROM notify_outbox WHERE task_id = $1 ORDER BY id LIMIT 50;

-- name: dlq_groups
-- FAILED tasks grouped by type, error type and message pattern, over the newest $2 of them.
WITH f AS (
    SELECT id, type, finished_at, coalesce(error ->> 'type', '') AS error_type,
           coalesce(error ->> 'message', '') AS message
    FROM tasks
    WHERE status = 'FAILED' AND ($1::text IS NULL OR tenant = $1)
    ORDER BY id DESC
    LIMIT $2
)
SELECT type, error_type, taskd_error_pattern(message) AS pattern, count(*)::int AS count,
       min(finished_at) AS first_seen, max(finished_at) AS last_seen,
       (array_agg(id ORDER BY id DESC))[1] AS sample_id,
       (array_agg(message ORDER BY id DESC))[1] AS sample_message
FROM f
GROUP BY 1, 2, 3
ORDER BY count DESC, last_seen DESC
LIMIT $3;

-- name: dlq_group_ids
-- The FAILED tasks of one group, newest first, at most $6.
SELECT id FROM tasks
WHERE status = 'FAILED' AND ($1::text IS NULL OR tenant = $1)
  AND type = $2 AND coalesce(error ->> 'type', '') = $3
  AND taskd_error_pattern(error ->> 'message') = $4
  AND ($5::uuid[] IS NULL OR id = ANY($5))
ORDER BY id DESC
LIMIT $6;

-- name: dlq_newest
-- The newest $2 FAILED tasks, one by one (a selection to redrive is picked from them).
SELECT id, type, finished_at, coalesce(error ->> 'type', '') AS error_type,
       coalesce(error ->> 'message', '') AS message
FROM tasks
WHERE status = 'FAILED' AND ($1::text IS NULL OR tenant = $1)
ORDER BY id DESC
LIMIT $2;

-- name: failed_among
-- Which of these tasks are FAILED and visible to the tenant (a selection to redrive).
SELECT id FROM tasks
WHERE id = ANY($1::uuid[]) AND status = 'FAILED' AND ($2::text IS NULL OR tenant = $2)
ORDER BY id DESC;

-- name: dag_failed
-- The tasks of a DAG that ended without success on their own (not cut off by a parent).
SELECT id FROM tasks WHERE dag_id = $1 AND status IN ('FAILED', 'CANCELLED') ORDER BY id;

-- name: tenant_queue_counts
-- A tenant's live and dead tasks per queue (tasks_tenant_status leaves SUCCESS out).
SELECT queue, status, count(*)::int AS n,
       min(run_at) FILTER (WHERE status = 'PENDING' AND run_at <= now()) AS oldest_due
FROM tasks
WHERE tenant = $1 AND status IN ('WAITING', 'PENDING', 'RUNNING', 'FAILED')
GROUP BY queue, status;

-- name: tenant_queue_delayed
SELECT queue, count(*)::int AS n FROM tasks
WHERE tenant = $1 AND status = 'PENDING' AND run_at > now()
GROUP BY queue;

-- name: failed_by_queue
SELECT queue, count(*)::int AS n FROM tasks WHERE status = 'FAILED' GROUP BY queue;

-- name: recent_activity
-- Over the last $1 seconds: attempts lost to reclaimed leases, and tasks dead-lettered.
SELECT
    (SELECT count(*) FROM attempts a JOIN tasks t ON t.id = a.task_id
     WHERE a.finished_at > now() - $1 * interval '1 second' AND a.outcome = 'LOST'
       AND ($2::text IS NULL OR t.tenant = $2))::int AS lost,
    (SELECT count(*) FROM dlq_outbox o JOIN tasks t ON t.id = o.task_id
     WHERE o.created_at > now() - $1 * interval '1 second'
       AND ($2::text IS NULL OR t.tenant = $2))::int AS dead;

-- name: throughput
-- Attempts that ended since $2 (epoch seconds), by queue and minute: successes and failures.
-- The dashboard asks only for the minutes it has not counted yet (BRIN on finished_at).
SELECT t.queue,
       extract(epoch FROM date_trunc('minute', a.finished_at))::bigint AS minute,
       count(*) FILTER (WHERE a.outcome = 'SUCCESS')::int AS ok,
       count(*) FILTER (WHERE a.outcome <> 'SUCCESS')::int AS failed
FROM attempts a JOIN tasks t ON t.id = a.task_id
WHERE a.finished_at >= to_timestamp($2) AND ($1::text IS NULL OR t.tenant = $1)
GROUP BY 1, 2;

-- name: watch_tasks
-- The live pages' one poll: a version of each watched task.
SELECT id, status, attempt, updated_at FROM tasks WHERE id = ANY($1::uuid[]);

-- name: watch_dags
SELECT dag_id, max(updated_at) AS updated_at, count(*)::int AS n
FROM tasks WHERE dag_id = ANY($1::uuid[]) GROUP BY dag_id;

-- name: audit_insert
INSERT INTO audit_log (actor, tenant, via, action, filter, task_ids, count)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: audit_of_task
SELECT at, actor, via, action, count FROM audit_log
WHERE task_ids @> ARRAY[$1::uuid] ORDER BY id DESC LIMIT 20;

-- name: audit_recent
SELECT id, at, actor, tenant, via, action, filter, count FROM audit_log
WHERE ($1::text IS NULL OR tenant = $1) ORDER BY id DESC LIMIT $2;
