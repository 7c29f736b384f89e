-- Cancellation of RUNNING tasks: the request is durable, so a worker that misses the wake-up
-- (or dies) still ends the task CANCELLED rather than retrying it.
ALTER TABLE tasks ADD COLUMN cancel_requested_at timestamptz;
