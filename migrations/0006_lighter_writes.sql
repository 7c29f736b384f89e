-- Cheaper status changes on the hot path (bench/README.md):
-- * attempts rows are written only by fenced statements that have just updated their task, so
--   the foreign key's per-row check bought nothing but ~15 us per row. Whatever prunes tasks
--   must delete their attempts too (the prune step does it in the same statement).
-- * most tasks end SUCCESS and are then listed through tasks_tenant; leaving SUCCESS rows out
--   of tasks_tenant_status saves an index insertion on every task's final write.
ALTER TABLE attempts DROP CONSTRAINT attempts_task_id_fkey;

DROP INDEX tasks_tenant_status;
CREATE INDEX tasks_tenant_status ON tasks (tenant, status, id) WHERE status <> 'SUCCESS';
