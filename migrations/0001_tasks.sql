-- Tasks, their attempt history and the queue registry (DESIGN §2, §3, §5).

CREATE TABLE tasks (
    id              uuid PRIMARY KEY,
    tenant          text        NOT NULL,
    type            text        NOT NULL,
    queue           text        NOT NULL,
    priority        smallint    NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    status          text        NOT NULL CHECK (status IN ('WAITING', 'PENDING', 'RUNNING',
                                    'SUCCESS', 'FAILED', 'CANCELLED', 'UPSTREAM_FAILED')),
    payload         jsonb       NOT NULL DEFAULT '{}',
    labels          jsonb       NOT NULL DEFAULT '{}',
    -- The fencing token: incremented under the row lock by the flip to RUNNING.
    attempt         integer     NOT NULL DEFAULT 0,
    -- Attempts made before the latest redrive; the budget is max_retries + 1 after it.
    attempt_base    integer     NOT NULL DEFAULT 0,
    -- NULL until the first run when the submission left them out: the worker then fills in the
    -- handler's own default (@task(max_retries=..., timeout=...)) or the configured one.
    max_retries     integer     CHECK (max_retries BETWEEN 0 AND 100),
    timeout         double precision CHECK (timeout > 0),
    backoff         jsonb,
    run_at          timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    result          jsonb,
    error           jsonb,
    lease_token     text,
    worker          text,
    idempotency_key text,
    request_hash    text,
    notify          jsonb,
    dag_id          uuid,
    depends_on      uuid[]      NOT NULL DEFAULT '{}'
);

-- Idempotency: one task per (tenant, key).
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Reconcile (PENDING) and rescue (RUNNING) page through live rows by id.
CREATE INDEX tasks_live ON tasks (status, id) WHERE status IN ('WAITING', 'PENDING', 'RUNNING');
-- Listing a tenant's tasks newest first, optionally by status.
CREATE INDEX tasks_tenant ON tasks (tenant, id);
CREATE INDEX tasks_tenant_status ON tasks (tenant, status, id);

CREATE TABLE attempts (
    task_id     uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    worker      text,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    outcome     text        NOT NULL CHECK (outcome IN ('SUCCESS', 'ERROR', 'TIMEOUT', 'LOST',
                                'CANCELLED')),
    error       jsonb,
    PRIMARY KEY (task_id, attempt)
);

-- Every queue that ever held a task: the promoter reaps and reconciles these.
CREATE TABLE queues (
    name       text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
