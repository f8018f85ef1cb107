-- conveyor schema v2. A job that runs and succeeds passes through 'ready', 'running' and
-- 'succeeded' only. Every state change is an update that moves the row (state is indexed), so
-- each whole-table index costs every enqueue, claim and finish one more index insert. Listing by
-- state and by name now uses indexes over the other states only; queries that want them repeat
-- the condition word for word (_common.QUIET_SQL), as SQLite needs to use a partial index.
-- Ready and running rows have their own partial indexes, and succeeded ones, the bulk of the
-- table, are found newest first through the primary key. Conditions are written as ORs: SQLite
-- evaluates an IN list of more than two values through a temporary table on every row written.
CREATE INDEX conveyor_jobs_quiet_state ON conveyor_jobs (state, id)
    WHERE (state = 'scheduled' OR state = 'failed' OR state = 'dead' OR state = 'cancelled' OR state = 'blocked');
CREATE INDEX conveyor_jobs_quiet_name ON conveyor_jobs (name, id)
    WHERE (state = 'scheduled' OR state = 'failed' OR state = 'dead' OR state = 'cancelled' OR state = 'blocked');
DROP INDEX conveyor_jobs_state;
DROP INDEX conveyor_jobs_name;
DROP INDEX conveyor_jobs_finished;
CREATE INDEX conveyor_jobs_finished ON conveyor_jobs (finished_at)
    WHERE (state = 'succeeded' OR state = 'dead' OR state = 'cancelled');
DROP INDEX conveyor_jobs_unique;
CREATE UNIQUE INDEX conveyor_jobs_unique ON conveyor_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND (state = 'scheduled' OR state = 'ready' OR state = 'running'
                                      OR state = 'failed' OR state = 'blocked');
