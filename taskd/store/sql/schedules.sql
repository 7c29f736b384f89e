-- Named queries of the schedule store. Each block starts with "-- name: <name>".

-- name: insert_schedule
-- A new schedule; no row when the tenant already has one by this name.
INSERT INTO schedules (id, tenant, name, cron, every, timezone, task, overlap, catchup,
                       catchup_window, max_catchup_runs, jitter, start_at, end_at, paused,
                       source, anchor, next_fire_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (tenant, name) DO NOTHING
RETURNING *;

-- name: upsert_declared
-- A schedule declared in the configuration, by (tenant, name). Its timing unchanged, the
-- fire state is kept, so instants missed while no promoter ran are caught up as usual.
INSERT INTO schedules AS s (id, tenant, name, cron, every, timezone, task, overlap, catchup,
                            catchup_window, max_catchup_runs, jitter, start_at, end_at, paused,
                            source, anchor, next_fire_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'config', $16, $17)
ON CONFLICT (tenant, name) DO UPDATE
SET task = EXCLUDED.task, overlap = EXCLUDED.overlap, catchup = EXCLUDED.catchup,
    catchup_window = EXCLUDED.catchup_window, max_catchup_runs = EXCLUDED.max_catchup_runs,
    jitter = EXCLUDED.jitter, paused = EXCLUDED.paused, source = 'config',
    cron = EXCLUDED.cron, every = EXCLUDED.every, timezone = EXCLUDED.timezone,
    start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at,
    anchor = CASE WHEN (s.cron, s.every, s.timezone, s.start_at, s.end_at) IS NOT DISTINCT FROM
                       (EXCLUDED.cron, EXCLUDED.every, EXCLUDED.timezone, EXCLUDED.start_at,
                        EXCLUDED.end_at)
                  THEN s.anchor ELSE EXCLUDED.anchor END,
    next_fire_at = CASE WHEN (s.cron, s.every, s.timezone, s.start_at, s.end_at)
                             IS NOT DISTINCT FROM
                             (EXCLUDED.cron, EXCLUDED.every, EXCLUDED.timezone,
                              EXCLUDED.start_at, EXCLUDED.end_at)
                        THEN s.next_fire_at ELSE EXCLUDED.next_fire_at END,
    updated_at = now()
RETURNING *;

-- name: delete_undeclared
-- Configuration schedules no longer declared: ($1, $2) are the declared (tenant, name) pairs.
DELETE FROM schedules s
WHERE s.source = 'config'
  AND NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[]) AS d(tenant, name)
                  WHERE d.tenant = s.tenant AND d.name = s.name)
RETURNING s.tenant, s.name;

-- name: get_schedule
SELECT * FROM schedules WHERE id = $1 AND ($2::text IS NULL OR tenant = $2);

-- name: lock_schedule
SELECT * FROM schedules WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) FOR UPDATE;

-- name: list_schedules
SELECT * FROM schedules
WHERE ($1::text IS NULL OR tenant = $1)
  AND ($2::text IS NULL OR name = $2)
  AND ($3::uuid IS NULL OR id < $3)
ORDER BY id DESC
LIMIT $4;

-- name: update_schedule
-- Write a schedule's definition (read under lock_schedule in the same transaction).
UPDATE schedules
SET name = $2, cron = $3, every = $4, timezone = $5, task = $6, overlap = $7, catchup = $8,
    catchup_window = $9, max_catchup_runs = $10, jitter = $11, start_at = $12, end_at = $13,
    paused = $14, anchor = $15, next_fire_at = $16,
    buffered_at = CASE WHEN $14 THEN NULL ELSE buffered_at END,
    updated_at = now()
WHERE id = $1
RETURNING *;

-- name: delete_schedule
DELETE FROM schedules WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) RETURNING id;

-- name: list_fires
SELECT instant, outcome, task_id, fired_at FROM schedule_fires
WHERE schedule_id = $1 AND ($2::timestamptz IS NULL OR instant < $2)
ORDER BY instant DESC
LIMIT $3;

-- name: due_schedules
-- Schedules with an instant up to the horizon $1, or a buffered instant waiting; oldest first.
SELECT id FROM schedules
WHERE NOT paused AND (next_fire_at <= $1 OR buffered_at IS NOT NULL)
ORDER BY next_fire_at NULLS FIRST
LIMIT $2;

-- name: claim_schedule
-- One due schedule, locked for this promoter; none when another holds it (or fired it since).
SELECT * FROM schedules
WHERE id = $1 AND NOT paused AND (next_fire_at <= $2 OR buffered_at IS NOT NULL)
FOR UPDATE SKIP LOCKED;

-- name: task_status
SELECT status FROM tasks WHERE id = $1;

-- name: insert_fires
-- Record fires; an instant already recorded (by a backfill or a trigger) is left out.
INSERT INTO schedule_fires (schedule_id, instant, outcome, task_id)
SELECT $1, x.instant, x.outcome, x.task_id
FROM unnest($2::timestamptz[], $3::text[], $4::uuid[]) AS x(instant, outcome, task_id)
ON CONFLICT (schedule_id, instant) DO NOTHING
RETURNING instant, fired_at;

-- name: recorded_fires
SELECT instant, outcome, task_id FROM schedule_fires
WHERE schedule_id = $1 AND instant = ANY($2::timestamptz[]);

-- name: point_fire
-- A fire whose task key was already taken in the tenant: the fire is that task's.
UPDATE schedule_fires SET task_id = $3 WHERE schedule_id = $1 AND instant = $2;

-- name: advance_schedule
UPDATE schedules
SET next_fire_at = $2,
    last_fire_at = CASE WHEN $3::timestamptz IS NULL THEN last_fire_at
                        ELSE greatest(last_fire_at, $3) END,
    buffered_at = $4,
    last_task_id = coalesce($5, last_task_id),
    updated_at = now()
WHERE id = $1;

-- name: set_last_task
UPDATE schedules SET last_task_id = $2, updated_at = now() WHERE id = $1;
