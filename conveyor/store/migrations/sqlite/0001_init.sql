-- conveyor schema v1 (SQLite). Times are UNIX seconds (REAL, UTC).
CREATE TABLE IF NOT EXISTS conveyor_schema (
    version     INTEGER PRIMARY KEY,
    applied_at  REAL NOT NULL
);

CREATE TABLE conveyor_jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT    NOT NULL,
    queue             TEXT    NOT NULL DEFAULT 'default',
    priority          INTEGER NOT NULL DEFAULT 0,
    state             TEXT    NOT NULL,
    args              TEXT    NOT NULL DEFAULT '[]',
    kwargs            TEXT    NOT NULL DEFAULT '{}',
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL DEFAULT 1,
    timeout           REAL,
    run_at            REAL    NOT NULL,
    created_at        REAL    NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    heartbeat_at      REAL,
    worker_id         TEXT,
    lease             TEXT,
    result            TEXT,
    error             TEXT,
    progress          REAL,
    progress_message  TEXT,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    cancel_requested_at REAL,
    lost_count        INTEGER NOT NULL DEFAULT 0,
    -- flow control (unique jobs, concurrency limits, workflows) builds on these
    unique_key        TEXT,
    concurrency_key   TEXT,
    parent_id         INTEGER,
    meta              TEXT
);

-- claim: next ready job of a queue, highest priority first, oldest first
CREATE INDEX conveyor_jobs_ready ON conveyor_jobs (queue, priority DESC, id) WHERE state = 'ready';
-- promotion of scheduled jobs and retries whose time has come
CREATE INDEX conveyor_jobs_due ON conveyor_jobs (run_at) WHERE state IN ('scheduled', 'failed');
-- running jobs of one worker (rescue, heartbeat)
CREATE INDEX conveyor_jobs_running ON conveyor_jobs (worker_id) WHERE state = 'running';
-- listing by state, newest first; retention
CREATE INDEX conveyor_jobs_state ON conveyor_jobs (state, id);
CREATE INDEX conveyor_jobs_finished ON conveyor_jobs (finished_at) WHERE state IN ('succeeded', 'dead', 'cancelled');
CREATE INDEX conveyor_jobs_name ON conveyor_jobs (name, id);
CREATE UNIQUE INDEX conveyor_jobs_unique ON conveyor_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'ready', 'running', 'failed', 'blocked');
CREATE INDEX conveyor_jobs_blocked ON conveyor_jobs (concurrency_key, id) WHERE state = 'blocked';

CREATE TABLE conveyor_job_dependencies (
    job_id      INTEGER NOT NULL,
    depends_on  INTEGER NOT NULL,
    PRIMARY KEY (job_id, depends_on)
);

CREATE TABLE conveyor_attempts (
    id             INTEGER PRIMARY KEY,
    job_id         INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    worker_id      TEXT,
    started_at     REAL    NOT NULL,
    finished_at    REAL,
    outcome        TEXT    NOT NULL,
    error_class    TEXT,
    error_message  TEXT,
    traceback      TEXT
);
CREATE INDEX conveyor_attempts_job ON conveyor_attempts (job_id, id);

CREATE TABLE conveyor_logs (
    id       INTEGER PRIMARY KEY,
    job_id   INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    at       REAL    NOT NULL,
    message  TEXT    NOT NULL
);
CREATE INDEX conveyor_logs_job ON conveyor_logs (job_id, id);

CREATE TABLE conveyor_queues (
    name        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL
);

CREATE TABLE conveyor_processes (
    id             TEXT PRIMARY KEY,
    kind           TEXT    NOT NULL,
    host           TEXT    NOT NULL,
    pid            INTEGER NOT NULL,
    supervisor_id  TEXT,
    queues         TEXT    NOT NULL DEFAULT '[]',
    concurrency    INTEGER NOT NULL DEFAULT 0,
    job_names      TEXT    NOT NULL DEFAULT '[]',
    started_at     REAL    NOT NULL,
    heartbeat_at   REAL    NOT NULL
);

CREATE TABLE conveyor_leaders (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  REAL NOT NULL
);
