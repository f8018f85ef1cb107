-- conveyor schema v5: recurring schedules. A tick is written in the same transaction as the
-- job it enqueues, and the unique index on (schedule, fire_at) lets each scheduled tick be
-- written once, however many schedulers run. Ticks are kept apart from the jobs: pruning
-- finished jobs never lets a tick fire again (the schedule row keeps the latest tick anyway).
CREATE TABLE conveyor_cron_schedules (
    name           TEXT PRIMARY KEY,
    description    TEXT    NOT NULL,
    timezone       TEXT    NOT NULL,
    job            TEXT    NOT NULL,
    first_seen_at  REAL    NOT NULL,
    seen_at        REAL    NOT NULL,
    last_tick_at   REAL,
    paused         INTEGER NOT NULL DEFAULT 0,
    resumed_at     REAL,
    updated_at     REAL
);
CREATE TABLE conveyor_cron_ticks (
    id           INTEGER PRIMARY KEY,
    schedule     TEXT    NOT NULL,
    fire_at      REAL    NOT NULL,
    kind         TEXT    NOT NULL DEFAULT 'scheduled',
    status       TEXT    NOT NULL,
    reason       TEXT,
    job_id       INTEGER,
    recorded_at  REAL    NOT NULL,
    recorded_by  TEXT
);
CREATE UNIQUE INDEX conveyor_cron_ticks_once ON conveyor_cron_ticks (schedule, fire_at)
    WHERE kind = 'scheduled';
CREATE INDEX conveyor_cron_ticks_history ON conveyor_cron_ticks (schedule, fire_at);
