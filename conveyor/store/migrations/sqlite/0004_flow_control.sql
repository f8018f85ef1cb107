-- conveyor schema v4: flow control. A job with a concurrency key runs only while fewer than
-- concurrency_max jobs of that key are admitted (ready or running); the others wait 'blocked'
-- and are admitted, highest priority then oldest first, as slots free. A job enqueued with
-- unique_until "started" gives its unique key up when it is first claimed (unique_started).
-- A key enqueued with unique_for also blocks until conveyor_unique_locks.until, whatever the
-- state of the job that took it.
ALTER TABLE conveyor_jobs ADD COLUMN concurrency_max INTEGER;
ALTER TABLE conveyor_jobs ADD COLUMN unique_started INTEGER NOT NULL DEFAULT 0;
CREATE TABLE conveyor_unique_locks (
    key     TEXT PRIMARY KEY,
    job_id  INTEGER,
    until   REAL NOT NULL
);
DROP INDEX conveyor_jobs_blocked;
CREATE INDEX conveyor_jobs_blocked ON conveyor_jobs (concurrency_key, priority DESC, id)
    WHERE state = 'blocked';
CREATE INDEX conveyor_jobs_admitted ON conveyor_jobs (concurrency_key)
    WHERE concurrency_key IS NOT NULL AND (state = 'ready' OR state = 'running');
