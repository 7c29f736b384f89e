-- DAG dependencies (DESIGN §5, DAG): graphs, edges and each child's count of unmet parents.

CREATE TABLE dags (
    id         uuid PRIMARY KEY,
    tenant     text        NOT NULL,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dags_tenant ON dags (tenant, id);

ALTER TABLE tasks
    ADD COLUMN dag_key      text,
    -- Parents that have not succeeded yet; the child becomes PENDING when it reaches 0.
    ADD COLUMN unmet        integer NOT NULL DEFAULT 0,
    -- Lets the completion path skip the release/cascade statements for tasks without children.
    ADD COLUMN has_children boolean NOT NULL DEFAULT false;

CREATE INDEX tasks_dag ON tasks (dag_id) WHERE dag_id IS NOT NULL;

CREATE TABLE edges (
    parent uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    child  uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (parent, child)
);
CREATE INDEX edges_child ON edges (child);
