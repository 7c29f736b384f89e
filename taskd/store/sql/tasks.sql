-- Named queries of the task store. Each block starts with "-- name: <name>".
-- Fenced statements test status as (status || '') so that the planner cannot serve them from
-- the partial tasks_live index and must look rows up by primary key (shared/PERF.md, item 1).

-- name: insert_tasks
-- Tasks whose queues are registered already (register_queues); a task whose idempotency key is
-- taken is silently left out. insert_task below is the same for one task: at 200 submissions a
-- second, one at a time, the single-row form is ~0.13 ms faster than unnest (bench/README.md).
INSERT INTO tasks (id, tenant, type, queue, priority, status, payload, labels, max_retries,
                   timeout, backoff, run_at, idempotency_key, request_hash, notify)
SELECT id, tenant, type, queue, priority, 'PENDING', payload, labels, max_retries, timeout,
       backoff, coalesce(run_at, now() + delay * interval '1 second'), idempotency_key,
       request_hash, notify
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[],
            $8::int[], $9::float8[], $10::jsonb[], $11::timestamptz[], $12::float8[], $13::text[],
            $14::text[], $15::jsonb[])
    AS x(id, tenant, type, queue, priority, payload, labels, max_retries, timeout, backoff,
         run_at, delay, idempotency_key, request_hash, notify)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *, (extract(epoch FROM run_at - now()) * 1000)::bigint AS delay_ms;

-- name: insert_task
INSERT INTO tasks (id, tenant, type, queue, priority, status, payload, labels, max_retries,
                   timeout, backoff, run_at, idempotency_key, request_hash, notify)
VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $8, $9, $10,
        coalesce($11, now() + $12 * interval '1 second'), $13, $14, $15)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *, (extract(epoch FROM run_at - now()) * 1000)::bigint AS delay_ms;

-- name: register_queues
-- The queues the promoter serves (known_queues); taskd never removes a row.
INSERT INTO queues (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING;

-- name: find_idempotent
SELECT * FROM tasks WHERE tenant = $1 AND idempotency_key = ANY($2::text[]);

-- name: get_task
SELECT * FROM tasks WHERE id = $1 AND ($2::text IS NULL OR tenant = $2);

-- name: get_attempts
SELECT attempt, worker, started_at, finished_at, outcome, error
FROM attempts WHERE task_id = $1 ORDER BY attempt;

-- name: list_tasks
SELECT * FROM tasks
WHERE ($1::text IS NULL OR tenant = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR type = $3)
  AND ($4::text IS NULL OR queue = $4)
  AND ($5::uuid IS NULL OR dag_id = $5)
  AND ($6::jsonb IS NULL OR labels @> $6)
  AND ($7::timestamptz IS NULL OR created_at > $7)
  AND ($8::timestamptz IS NULL OR created_at < $8)
  AND ($9::uuid IS NULL OR id < $9)
ORDER BY id DESC
LIMIT $10;

-- name: flip_running
-- Leased ids become RUNNING for a new attempt; ids no longer PENDING are left out.
-- Retries and timeout left unset at submit are fixed now: the handler's default ($4..$6, by
-- type), else the configured default ($7, $8). flip_running_one is the same for one id.
UPDATE tasks t
SET status = 'RUNNING', attempt = t.attempt + 1, started_at = now(), updated_at = now(),
    lease_token = x.token, worker = $3,
    max_retries = coalesce(t.max_retries, ($5::int[])[array_position($4::text[], t.type)], $7),
    timeout = coalesce(t.timeout, ($6::float8[])[array_position($4::text[], t.type)], $8)
FROM unnest($1::uuid[], $2::text[]) AS x(id, token)
WHERE t.id = x.id AND (t.status || '') = 'PENDING'
RETURNING t.id, t.tenant, t.queue, t.type, t.priority, t.payload, t.attempt, t.attempt_base,
          t.max_retries, t.timeout, t.backoff, t.lease_token,
          cardinality(t.depends_on) > 0 AS has_parents,
          -- The wait-time metric (due -> start), by the database clock alone.
          greatest(extract(epoch FROM now() - t.run_at), 0)::float8 AS waited;

-- name: flip_running_one
UPDATE tasks t
SET status = 'RUNNING', attempt = t.attempt + 1, started_at = now(), updated_at = now(),
    lease_token = $2, worker = $3,
    max_retries = coalesce(t.max_retries, ($5::int[])[array_position($4::text[], t.type)], $7),
    timeout = coalesce(t.timeout, ($6::float8[])[array_position($4::text[], t.type)], $8)
WHERE t.id = $1 AND (t.status || '') = 'PENDING'
RETURNING t.id, t.tenant, t.queue, t.type, t.priority, t.payload, t.attempt, t.attempt_base,
          t.max_retries, t.timeout, t.backoff, t.lease_token,
          cardinality(t.depends_on) > 0 AS has_parents,
          greatest(extract(epoch FROM now() - t.run_at), 0)::float8 AS waited;

-- name: complete
-- Record attempt outcomes, fenced on (id, attempt, RUNNING): a worker whose lease was
-- reclaimed changes nothing. The attempt's history row is written in the same statement, and
-- so are the notifications a SUCCESS or FAILED asks for: the task's own notify spec, and the
-- configured defaults passed as parallel arrays $9..$13 (status, type LIKE pattern, queue or
-- NULL for any, channel, target; empty when none are configured).
WITH x AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::jsonb[], $5::jsonb[],
                         $6::float8[], $7::text[], $8::jsonb[])
        AS x(id, attempt, status, result, error, delay, outcome, log)
), done AS (
    UPDATE tasks t
    -- A retry of a task whose cancellation was requested while it ran ends it instead.
    SET status = CASE WHEN x.status = 'PENDING' AND t.cancel_requested_at IS NOT NULL
                      THEN 'CANCELLED' ELSE x.status END,
        result = x.result,
        error = coalesce(x.error, t.error),
        finished_at = CASE WHEN x.status = 'PENDING' AND t.cancel_requested_at IS NULL
                           THEN NULL ELSE now() END,
        run_at = CASE WHEN x.status = 'PENDING'
                      THEN now() + x.delay * interval '1 second' ELSE t.run_at END,
        lease_token = NULL,
        updated_at = now()
    FROM x
    WHERE t.id = x.id AND t.attempt = x.attempt AND (t.status || '') = 'RUNNING'
    RETURNING t.id, t.attempt, t.worker, t.started_at, x.outcome, x.error, t.status,
              t.has_children, x.log, t.type, t.queue, t.notify
), history AS (
    INSERT INTO attempts (task_id, attempt, worker, started_at, outcome, error, log)
    SELECT id, attempt, worker, started_at, outcome, error, log FROM done
), dead AS (
    -- A final failure is a dead letter: the outbox row commits with the FAILED state.
    INSERT INTO dlq_outbox (task_id) SELECT id FROM done WHERE status = 'FAILED'
), wanted AS (
    -- The task's own spec: {"on": [...], "email": [...], "webhook": "..."}. Tasks without
    -- one are filtered out before anything is unpacked; a malformed spec yields nothing.
    SELECT d.id, d.attempt, d.status, 'email' AS channel, e.target
    FROM done d,
         jsonb_array_elements_text(CASE WHEN jsonb_typeof(d.notify -> 'email') = 'array'
                                        THEN d.notify -> 'email' END) AS e(target)
    WHERE d.notify IS NOT NULL AND d.status IN ('SUCCESS', 'FAILED')
      AND coalesce(d.notify -> 'on', '["SUCCESS", "FAILED"]') ? d.status
    UNION ALL
    SELECT d.id, d.attempt, d.status, 'webhook', d.notify ->> 'webhook'
    FROM done d
    WHERE d.notify IS NOT NULL AND d.status IN ('SUCCESS', 'FAILED')
      AND d.notify ->> 'webhook' IS NOT NULL
      AND coalesce(d.notify -> 'on', '["SUCCESS", "FAILED"]') ? d.status
    UNION ALL
    SELECT d.id, d.attempt, d.status, r.channel, r.target
    FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[])
            AS r(status, type_like, queue, channel, target)
    JOIN done d ON d.status = r.status AND d.type LIKE r.type_like
               AND (r.queue IS NULL OR r.queue = d.queue)
), notes AS (
    INSERT INTO notify_outbox (task_id, task_attempt, event_status, channel, target)
    SELECT DISTINCT id, attempt, status, channel, target FROM wanted
    ON CONFLICT DO NOTHING
)
SELECT id, attempt, status, has_children FROM done;

-- name: recorded_outcomes
-- After an unknown commit outcome: which (id, attempt) already have an outcome recorded.
SELECT a.task_id AS id, a.attempt, a.outcome
FROM attempts a
JOIN unnest($1::uuid[], $2::int[]) AS x(id, attempt)
  ON a.task_id = x.id AND a.attempt = x.attempt;

-- name: lose_attempts
-- Leases that expired or vanished: record the attempt as LOST (fenced on the lease token) and
-- put the task back to PENDING, or FAILED when its budget is spent. Returns what to enqueue:
-- the tasks just made PENDING and those that were PENDING already (leased, never started).
-- A task that fails here notifies as in `complete` (configured defaults in $5..$9).
WITH x AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS x(id, token)),
lost AS (
    UPDATE tasks t
    SET status = CASE WHEN t.cancel_requested_at IS NOT NULL THEN 'CANCELLED'
                      WHEN t.attempt - t.attempt_base > coalesce(t.max_retries, $4)
                      THEN 'FAILED' ELSE 'PENDING' END,
        error = $3::jsonb,
        finished_at = CASE WHEN t.cancel_requested_at IS NOT NULL
                             OR t.attempt - t.attempt_base > coalesce(t.max_retries, $4)
                           THEN now() END,
        run_at = now(),
        lease_token = NULL,
        updated_at = now()
    FROM x
    WHERE t.id = x.id AND t.lease_token = x.token AND (t.status || '') = 'RUNNING'
    RETURNING t.id, t.attempt, t.worker, t.started_at, t.status, t.queue, t.priority,
              t.type, t.notify
), history AS (
    INSERT INTO attempts (task_id, attempt, worker, started_at, outcome, error)
    SELECT id, attempt, worker, started_at, 'LOST', $3::jsonb FROM lost
), dead AS (
    INSERT INTO dlq_outbox (task_id) SELECT id FROM lost WHERE status = 'FAILED'
), wanted AS (
    SELECT d.id, d.attempt, d.status, 'email' AS channel, e.target
    FROM lost d,
         jsonb_array_elements_text(CASE WHEN jsonb_typeof(d.notify -> 'email') = 'array'
                                        THEN d.notify -> 'email' END) AS e(target)
    WHERE d.notify IS NOT NULL AND d.status = 'FAILED'
      AND coalesce(d.notify -> 'on', '["SUCCESS", "FAILED"]') ? d.status
    UNION ALL
    SELECT d.id, d.attempt, d.status, 'webhook', d.notify ->> 'webhook'
    FROM lost d
    WHERE d.notify IS NOT NULL AND d.status = 'FAILED' AND d.notify ->> 'webhook' IS NOT NULL
      AND coalesce(d.notify -> 'on', '["SUCCESS", "FAILED"]') ? d.status
    UNION ALL
    SELECT d.id, d.attempt, d.status, r.channel, r.target
    FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
            AS r(status, type_like, queue, channel, target)
    JOIN lost d ON d.status = r.status AND d.type LIKE r.type_like
               AND (r.queue IS NULL OR r.queue = d.queue)
), notes AS (
    INSERT INTO notify_outbox (task_id, task_attempt, event_status, channel, target)
    SELECT DISTINCT id, attempt, status, channel, target FROM wanted
    ON CONFLICT DO NOTHING
)
SELECT id, queue, priority, status, 0::bigint AS delay_ms FROM lost
UNION ALL
SELECT t.id, t.queue, t.priority, t.status,
       (extract(epoch FROM t.run_at - now()) * 1000)::bigint AS delay_ms
FROM tasks t JOIN x ON t.id = x.id
WHERE t.status = 'PENDING';

-- name: pending_page
-- Reconcile: PENDING tasks not touched for a grace period, in id order after a cursor.
SELECT id, queue, priority, (extract(epoch FROM run_at - now()) * 1000)::bigint AS delay_ms
FROM tasks
WHERE status = 'PENDING' AND updated_at < now() - $1 * interval '1 second' AND id > $2
ORDER BY id
LIMIT $3;

-- name: running_page
-- Rescue: RUNNING tasks that started over a lease period ago, in id order after a cursor.
SELECT id, queue, lease_token, attempt
FROM tasks
WHERE status = 'RUNNING' AND updated_at < now() - $1 * interval '1 second' AND id > $2
ORDER BY id
LIMIT $3;

-- name: known_queues
SELECT name FROM queues ORDER BY name;
