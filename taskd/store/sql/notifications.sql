-- Named queries of the notification outbox. Each block starts with "-- name: <name>".
-- Rows are written by the statements that record a task's SUCCESS or FAILED (tasks.sql:
-- complete, lose_attempts); the notifier claims, delivers and settles them here.

-- name: claim
-- Due, pending rows with their tasks; SKIP LOCKED lets several notifiers share the work, and
-- the locks last until the claiming transaction ends (a notifier that dies releases them).
SELECT o.id AS n_id, o.message_id AS n_message_id, o.task_attempt AS n_task_attempt,
       o.event_status AS n_event, o.channel AS n_channel, o.target AS n_target,
       o.content AS n_content, o.attempts AS n_attempts, t.*
FROM notify_outbox o JOIN tasks t ON t.id = o.task_id
WHERE o.state = 'pending' AND o.next_attempt_at <= now()
ORDER BY o.next_attempt_at, o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED;

-- name: attempts_of
SELECT task_id, attempt, worker, started_at, finished_at, outcome, error, log
FROM attempts WHERE task_id = ANY($1::uuid[]) ORDER BY task_id, attempt;

-- name: settle
-- One delivery attempt per row: delivered, failed (due again after min(max, base * 2^(n-1))
-- seconds, n counting this attempt) or abandoned (dead); each attempt is kept in
-- notify_attempts. The first rendering of a row is kept so that retries send the same message.
-- Times are clock_timestamp(): now() is when the claim began, before the delivery took its time.
WITH x AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
        AS x(id, outcome, detail, content, started_at)
), settled AS (
    UPDATE notify_outbox o
    SET attempts = o.attempts + 1,
        state = CASE x.outcome WHEN 'delivered' THEN 'delivered'
                               WHEN 'abandoned' THEN 'dead' ELSE 'pending' END,
        delivered_at = CASE WHEN x.outcome = 'delivered' THEN clock_timestamp() END,
        last_error = CASE WHEN x.outcome = 'delivered' THEN NULL ELSE left(x.detail, 2000) END,
        content = coalesce(o.content, x.content),
        next_attempt_at = CASE WHEN x.outcome = 'failed'
                               THEN clock_timestamp()
                                    + least($7, $6 * power(2, least(o.attempts, 30)))
                                      * interval '1 second'
                               ELSE o.next_attempt_at END
    FROM x
    WHERE o.id = x.id
    RETURNING o.id, o.attempts
)
INSERT INTO notify_attempts (outbox_id, attempt, started_at, finished_at, outcome, detail)
SELECT s.id, s.attempts, x.started_at, clock_timestamp(), x.outcome, left(x.detail, 2000)
FROM settled s JOIN x ON x.id = s.id;

-- name: backlog
SELECT count(*) FROM notify_outbox WHERE state = 'pending';

-- name: next_due
-- Seconds until the earliest pending row is due (negative: due now); NULL when none waits.
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
FROM notify_outbox WHERE state = 'pending';
