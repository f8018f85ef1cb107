-- conveyor schema v7: what the dashboard reads beside the jobs.
-- sensitive: a JSON list of argument keys whose values are never shown (NULL: none).
-- conveyor_audit: who did what to which job, queue or schedule.
-- conveyor_history: one row per sample (about a minute) and queue. The leader counts what
-- happened since the previous sample from the primary keys of the jobs and attempts tables
-- (conveyor_history_marks keeps how far it got) and the finished-jobs index, so sampling adds
-- no index to those tables and costs what happened in the minute, not the table's size.
-- conveyor_metric_totals: the same counts and histograms summed per queue and job name since
-- the store was created (what a metrics scraper reads).
ALTER TABLE conveyor_jobs ADD COLUMN sensitive TEXT;
CREATE TABLE conveyor_audit (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE TABLE conveyor_history (
    minute          REAL    NOT NULL,
    queue           TEXT    NOT NULL,
    enqueued        INTEGER NOT NULL DEFAULT 0,
    succeeded       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    dead            INTEGER NOT NULL DEFAULT 0,
    ready           INTEGER NOT NULL DEFAULT 0,
    latency         REAL,
    duration_sum    REAL    NOT NULL DEFAULT 0,
    duration_count  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, queue)
);
CREATE TABLE conveyor_metric_totals (
    queue   TEXT NOT NULL,
    job     TEXT NOT NULL,
    metric  TEXT NOT NULL,
    value   REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, job, metric)
);
CREATE TABLE conveyor_history_marks (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    minute      REAL,
    sampled_at  REAL,
    job_id      INTEGER NOT NULL DEFAULT 0,
    attempt_id  INTEGER NOT NULL DEFAULT 0
);
-- an existing store starts counting from now, not from its first job
INSERT INTO conveyor_history_marks (id, job_id, attempt_id)
    SELECT 1, COALESCE((SELECT MAX(id) FROM conveyor_jobs), 0),
           COALESCE((SELECT MAX(id) FROM conveyor_attempts), 0);
