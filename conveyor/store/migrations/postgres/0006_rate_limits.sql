-- conveyor schema v6: rate limits. A job with a rate key starts only while fewer than
-- rate_count jobs of that key started in the last rate_period seconds (a sliding-window log of
-- starts, conveyor_rate_starts, written under the key's advisory lock on the database's clock).
-- A claimed job over the rate goes back to 'scheduled' at the moment the window has room,
-- attempt not counted, and so do the other ready jobs of its key.
ALTER TABLE conveyor_jobs ADD COLUMN rate_key text;
ALTER TABLE conveyor_jobs ADD COLUMN rate_count integer;
ALTER TABLE conveyor_jobs ADD COLUMN rate_period double precision;
CREATE TABLE conveyor_rate_starts (
    key  text NOT NULL,
    at   timestamptz NOT NULL
);
CREATE INDEX conveyor_rate_starts_key ON conveyor_rate_starts (key, at);
CREATE INDEX conveyor_jobs_rated ON conveyor_jobs (rate_key)
    WHERE rate_key IS NOT NULL AND state = 'ready';
