-- Named queries of the dead-letter outbox. Each block starts with "-- name: <name>".

-- name: claim_dead_letters
-- Due, unpublished rows with their tasks; SKIP LOCKED lets several promoters share the work.
SELECT o.id AS outbox_id, o.publish_attempts, t.*
FROM dlq_outbox o JOIN tasks t ON t.id = o.task_id
WHERE o.published_at IS NULL AND o.next_attempt_at <= now()
ORDER BY o.next_attempt_at, o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED;

-- name: attempts_of
SELECT task_id, attempt, worker, started_at, finished_at, outcome, error
FROM attempts WHERE task_id = ANY($1::uuid[]) ORDER BY task_id, attempt;

-- name: mark_published
UPDATE dlq_outbox SET published_at = now(), publish_attempts = publish_attempts + 1,
                      last_error = NULL
WHERE id = ANY($1::bigint[]);

-- name: mark_failed
-- Back off: the next try waits min(max, base * 2^attempts) seconds.
UPDATE dlq_outbox
SET publish_attempts = publish_attempts + 1,
    last_error = $2,
    next_attempt_at = now() + least($4, $3 * power(2, least(publish_attempts, 20)))
                              * interval '1 second'
WHERE id = ANY($1::bigint[]);

-- name: backlog
SELECT count(*) FROM dlq_outbox WHERE published_at IS NULL;
