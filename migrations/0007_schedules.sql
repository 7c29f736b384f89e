-- Schedules (issue 15): cron and interval schedules that every promoter fires, with no leader.
-- A promoter claims a due schedule row with FOR UPDATE SKIP LOCKED, records each fire instant
-- in schedule_fires (unique per schedule and instant) and inserts the fire's task (idempotency
-- key sched:<id>:<instant>) in the same transaction.

CREATE TABLE schedules (
    id               uuid        PRIMARY KEY,
    tenant           text        NOT NULL,
    name             text        NOT NULL,
    cron             text,
    every            double precision CHECK (every > 0),
    timezone         text        NOT NULL DEFAULT 'UTC',
    -- The task template: a submission without delay, run_at, idempotency_key or depends_on.
    task             jsonb       NOT NULL,
    overlap          text        NOT NULL DEFAULT 'skip'
                                 CHECK (overlap IN ('skip', 'buffer_one', 'allow', 'cancel_previous')),
    catchup          text        NOT NULL DEFAULT 'latest'
                                 CHECK (catchup IN ('latest', 'none', 'all')),
    catchup_window   double precision NOT NULL DEFAULT 3600,
    max_catchup_runs integer     NOT NULL DEFAULT 10,
    jitter           double precision NOT NULL DEFAULT 0,
    start_at         timestamptz,
    end_at           timestamptz,
    paused           boolean     NOT NULL DEFAULT false,
    -- 'config': declared in the YAML configuration, upserted by name, read-only through the API.
    source           text        NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'config')),
    -- `every` schedules fire at anchor + k * every.
    anchor           timestamptz NOT NULL,
    -- The earliest instant not decided yet; NULL when the schedule has no instant left.
    next_fire_at     timestamptz,
    last_fire_at     timestamptz,
    -- overlap buffer_one: the instant held until the previous run ends.
    buffered_at      timestamptz,
    -- The latest run's task: the overlap policies look at its status.
    last_task_id     uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every IS NULL))
);
CREATE UNIQUE INDEX schedules_name ON schedules (tenant, name);
-- The firer's scan: due schedules, and those holding a buffered instant.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;
CREATE INDEX schedules_buffered ON schedules (id) WHERE buffered_at IS NOT NULL AND NOT paused;

CREATE TABLE schedule_fires (
    schedule_id uuid        NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    instant     timestamptz NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('enqueued', 'caught_up', 'skipped_overlap',
                                            'missed', 'triggered', 'backfilled')),
    task_id     uuid,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    -- Once per instant, whichever promoter (or API request) gets there first.
    PRIMARY KEY (schedule_id, instant)
);
