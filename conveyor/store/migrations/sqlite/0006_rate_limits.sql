-- conveyor schema v6: rate limits. A job with a rate key starts only while fewer than
-- rate_count jobs of that key started in the last rate_period seconds (a sliding-window log of
-- starts, conveyor_rate_starts). A claimed job over the rate goes back to 'scheduled' at the
-- moment the window has room, attempt not counted, and so do the other ready jobs of its key.
ALTER TABLE conveyor_jobs ADD COLUMN rate_key TEXT;
ALTER TABLE conveyor_jobs ADD COLUMN rate_count INTEGER;
ALTER TABLE conveyor_jobs ADD COLUMN rate_period REAL;
CREATE TABLE conveyor_rate_starts (
    key  TEXT NOT NULL,
    at   REAL NOT NULL
);
CREATE INDEX conveyor_rate_starts_key ON conveyor_rate_starts (key, at);
CREATE INDEX conveyor_jobs_rated ON conveyor_jobs (rate_key)
    WHERE rate_key IS NOT NULL AND state = 'ready';
