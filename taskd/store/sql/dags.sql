-- Named queries for task dependencies. Each block starts with "-- name: <name>".

-- name: lock_parents
-- Lock the existing tasks new children will depend on, so a parent finishing at the same
-- moment either commits first (and we see its status) or waits for our edges (and releases).
SELECT id, status, dag_key FROM tasks
WHERE id = ANY($1::uuid[]) AND tenant = $2
ORDER BY id
FOR UPDATE;

-- name: insert_dag
INSERT INTO dags (id, tenant, name) VALUES ($1, $2, $3);

-- name: insert_graph_tasks
WITH x AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::jsonb[],
                         $7::jsonb[], $8::int[], $9::float8[], $10::jsonb[], $11::timestamptz[],
                         $12::float8[], $13::text[], $14::text[], $15::jsonb[], $16::text[],
                         $17::int[], $18::uuid[], $19::text[], $20::jsonb[])
        AS x(id, tenant, type, queue, priority, payload, labels, max_retries, timeout, backoff,
             run_at, delay, idempotency_key, request_hash, notify, status, unmet, dag_id,
             dag_key, error)
), q AS (
    INSERT INTO queues (name) SELECT DISTINCT queue FROM x ON CONFLICT DO NOTHING
)
INSERT INTO tasks (id, tenant, type, queue, priority, status, payload, labels, max_retries,
                   timeout, backoff, run_at, idempotency_key, request_hash, notify, unmet,
                   dag_id, dag_key, error, finished_at, depends_on)
SELECT id, tenant, type, queue, priority, status, payload, labels, max_retries, timeout,
       backoff, coalesce(run_at, now() + delay * interval '1 second'), idempotency_key,
       request_hash, notify, unmet, dag_id, dag_key, error,
       CASE WHEN status = 'UPSTREAM_FAILED' THEN now() END, '{}'::uuid[]
FROM x
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING *, (extract(epoch FROM run_at - now()) * 1000)::bigint AS delay_ms;

-- name: insert_edges
WITH e AS (SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS e(parent, child)),
kids AS (
    UPDATE tasks t SET depends_on = d.parents
    FROM (SELECT child, array_agg(parent ORDER BY parent) AS parents FROM e GROUP BY child) d
    WHERE t.id = d.child
), par AS (
    UPDATE tasks t SET has_children = true
    WHERE t.id IN (SELECT parent FROM e) AND NOT t.has_children
)
INSERT INTO edges (parent, child) SELECT parent, child FROM e ON CONFLICT DO NOTHING;

-- name: release_children
-- Parents $1 just succeeded: decrement their WAITING children's unmet counts (row locks make
-- two parents finishing at once each count exactly once) and return the children released.
WITH done AS (SELECT unnest($1::uuid[]) AS id),
counts AS (
    SELECT e.child, count(*)::int AS n FROM edges e JOIN done ON e.parent = done.id
    GROUP BY e.child
), released AS (
    UPDATE tasks c
    SET unmet = c.unmet - counts.n,
        status = CASE WHEN c.unmet - counts.n <= 0 THEN 'PENDING' ELSE c.status END,
        run_at = CASE WHEN c.unmet - counts.n <= 0 THEN greatest(c.run_at, now())
                      ELSE c.run_at END,
        updated_at = now()
    FROM counts
    WHERE c.id = counts.child AND c.status = 'WAITING'
    RETURNING c.id, c.queue, c.priority, c.status, c.run_at
)
SELECT id, queue, priority, (extract(epoch FROM run_at - now()) * 1000)::bigint AS delay_ms
FROM released WHERE status = 'PENDING';

-- name: cascade_failure
-- Parents $1 ended without success: every WAITING descendant becomes UPSTREAM_FAILED, its
-- error naming the ancestor that failed.
WITH RECURSIVE down(id, root) AS (
    SELECT e.child, e.parent FROM edges e WHERE e.parent = ANY($1::uuid[])
    UNION
    SELECT e.child, down.root FROM edges e JOIN down ON e.parent = down.id
), firsts AS (
    SELECT DISTINCT ON (down.id) down.id, down.root, coalesce(r.dag_key, r.id::text) AS name
    FROM down JOIN tasks r ON r.id = down.root
    ORDER BY down.id, down.root
)
UPDATE tasks t
SET status = 'UPSTREAM_FAILED', finished_at = now(), updated_at = now(),
    error = jsonb_build_object(
        'type', 'UpstreamFailed',
        'message', 'upstream task ' || firsts.name || ' (' || firsts.root::text || ') did not succeed',
        'retryable', false)
FROM firsts
WHERE t.id = firsts.id AND t.status = 'WAITING'
RETURNING t.id;

-- name: redrive
-- A terminal task back to work with a fresh attempt budget (history kept): FAILED and
-- CANCELLED to PENDING; UPSTREAM_FAILED to WAITING, or PENDING when its parents have all
-- succeeded meanwhile. Its UPSTREAM_FAILED descendants go back to WAITING.
WITH RECURSIVE target AS (
    SELECT t.id,
           (SELECT count(*) FROM edges e JOIN tasks p ON p.id = e.parent
            WHERE e.child = t.id AND p.status <> 'SUCCESS')::int AS unmet
    FROM tasks t
    WHERE t.id = $1 AND ($2::text IS NULL OR t.tenant = $2)
      AND t.status IN ('FAILED', 'CANCELLED', 'UPSTREAM_FAILED')
    FOR UPDATE OF t
), down(id) AS (
    SELECT e.child FROM edges e JOIN target ON e.parent = target.id
    UNION
    SELECT e.child FROM edges e JOIN down ON e.parent = down.id
), kids AS (
    UPDATE tasks t
    SET status = 'WAITING', error = NULL, finished_at = NULL, updated_at = now(),
        unmet = (SELECT count(*) FROM edges e JOIN tasks p ON p.id = e.parent
                 WHERE e.child = t.id AND p.status <> 'SUCCESS')::int
    FROM down
    WHERE t.id = down.id AND t.status = 'UPSTREAM_FAILED'
)
UPDATE tasks t
SET status = CASE WHEN target.unmet > 0 THEN 'WAITING' ELSE 'PENDING' END,
    unmet = target.unmet,
    attempt_base = t.attempt,
    finished_at = NULL, run_at = now(), updated_at = now(), lease_token = NULL
FROM target
WHERE t.id = target.id
RETURNING t.*, (extract(epoch FROM t.run_at - now()) * 1000)::bigint AS delay_ms;

-- name: parent_results
SELECT e.child, p.id, p.dag_key, p.result
FROM edges e JOIN tasks p ON p.id = e.parent
WHERE e.child = ANY($1::uuid[]);

-- name: get_dag
SELECT * FROM dags WHERE id = $1 AND ($2::text IS NULL OR tenant = $2);

-- name: dag_tasks
SELECT * FROM tasks WHERE dag_id = $1 ORDER BY id;

-- name: dag_edges
SELECT e.parent, e.child FROM edges e JOIN tasks t ON t.id = e.child WHERE t.dag_id = $1;

-- name: cancel
-- WAITING/PENDING end now; RUNNING record the request (the worker stops the handler and
-- records CANCELLED). Returns the task as it was before ($3 no rows: not cancellable/unknown).
WITH target AS (
    SELECT id, status AS was FROM tasks
    WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
      AND status IN ('WAITING', 'PENDING', 'RUNNING')
    FOR UPDATE
)
UPDATE tasks t
SET status = CASE WHEN target.was = 'RUNNING' THEN t.status ELSE 'CANCELLED' END,
    finished_at = CASE WHEN target.was = 'RUNNING' THEN t.finished_at ELSE now() END,
    cancel_requested_at = coalesce(t.cancel_requested_at, now()),
    updated_at = now()
FROM target
WHERE t.id = target.id
RETURNING t.*, target.was;
