"""The PostgreSQL store's statements, composed from named pieces (CTEs and conditions); no
statement is made by editing another's text. ``%(now)s`` is the caller's frozen time or NULL."""

from __future__ import annotations

import hashlib

from ...models import FINISHED_STATES, RETRYABLE_STATES, AttemptOutcome
from .. import shared as s
from .changes import CHANGED as CHANGED
from .changes import CHANNEL as CHANGES
from .changes import notify_if_any

CHANNEL = "conveyor_jobs"
PRUNE_BATCH = 5000
# the store's clock: the caller's frozen time if given, else the database's
NOW = "COALESCE(%(now)s::timestamptz, now())"


def wake_if_ready(source: str) -> str:
    """A scalar that notifies listeners (once, on commit) if ``source`` holds a ready job."""
    return (
        f"(SELECT count(pg_notify('{CHANNEL}', '')) FROM"
        f" (SELECT 1 FROM {source} WHERE state = 'ready' LIMIT 1) AS wake)"
    )


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_*advisory*lock`` (Python's hash() is salted)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


MIGRATE_LOCK = advisory_key("conveyor:migrate")
WAKE = f"SELECT pg_notify('{CHANNEL}', ''), pg_notify('{CHANGES}', '')"

# --- schema -------------------------------------------------------------------------------------
CREATE_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS conveyor_schema"
    " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
)
HAS_SCHEMA = "SELECT to_regclass('conveyor_schema')"
SCHEMA_VERSION = "SELECT MAX(version) FROM conveyor_schema"
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(%s)"
RECORD_VERSION = "INSERT INTO conveyor_schema (version, applied_at) VALUES (%s, now())"

# --- jobs: insert -------------------------------------------------------------------------------
# pieces: where the rows come from, how each becomes a row, what a held unique key does
STATE_ON_INSERT = (
    f"CASE WHEN run_at IS NOT NULL AND run_at > {NOW} THEN 'scheduled' ELSE {s.READY_OR_BLOCKED} END"
)
ROW_ON_INSERT = (
    f"name, queue, priority, {STATE_ON_INSERT}, args, kwargs, max_attempts, timeout,"
    f" COALESCE(run_at, {NOW}), {NOW}, unique_key, concurrency_key, concurrency_max,"
    " unique_started, rate_key, rate_count, rate_period, sensitive"
)
UNNEST_INPUT = """input AS (
    SELECT * FROM unnest(
        %(name)s::text[], %(queue)s::text[], %(priority)s::int[], %(args)s::text[],
        %(kwargs)s::text[], %(max_attempts)s::int[], %(timeout)s::float8[],
        %(run_at)s::timestamptz[], %(unique_key)s::text[], %(concurrency_key)s::text[],
        %(concurrency_max)s::int[], %(unique_started)s::bool[], %(rate_key)s::text[],
        %(rate_count)s::int[], %(rate_period)s::float8[], %(sensitive)s::text[]
    ) WITH ORDINALITY AS t(name, queue, priority, args, kwargs, max_attempts, timeout, run_at,
                           unique_key, concurrency_key, concurrency_max, unique_started,
                           rate_key, rate_count, rate_period, sensitive, ord)
)"""
# the ids drawn up front, in input order, so that each input row knows its own
NUMBERED_INPUT = """numbered AS (
    SELECT nextval((SELECT pg_get_serial_sequence('conveyor_jobs', 'id'))::regclass) AS id, i.*
    FROM (SELECT * FROM input ORDER BY ord) AS i
)"""
SKIP_HELD_KEYS = f"ON CONFLICT (unique_key) WHERE {s.UNIQUE_HELD_IN} DO NOTHING"

# no unique keys: every row is inserted; identity values are drawn in input order
INSERT_JOBS = f"""
WITH {UNNEST_INPUT}, inserted AS (
    INSERT INTO conveyor_jobs ({s.INSERT_COLUMNS})
    SELECT {ROW_ON_INSERT} FROM input ORDER BY ord
    RETURNING id, state
)
SELECT id, {wake_if_ready("inserted")}, {notify_if_any("inserted")} FROM inserted ORDER BY id
"""
# some unique keys: a row whose key an unfinished job holds (perhaps one earlier in the batch)
# is skipped; every input row comes back, in order, with its id and whether it was inserted
INSERT_JOBS_UNLESS_HELD = f"""
WITH {UNNEST_INPUT}, {NUMBERED_INPUT}, inserted AS (
    INSERT INTO conveyor_jobs (id, {s.INSERT_COLUMNS})
    SELECT id, {ROW_ON_INSERT} FROM numbered ORDER BY ord
    {SKIP_HELD_KEYS}
    RETURNING id, state
)
SELECT numbered.id, inserted.id IS NOT NULL, {wake_if_ready("inserted")},
       {notify_if_any("inserted")}
FROM numbered LEFT JOIN inserted USING (id) ORDER BY numbered.ord
"""
# the jobs holding keys now (a statement of its own: it sees what committed since the insert)
HOLDERS_OF_KEYS = (
    f"SELECT unique_key, id FROM conveyor_jobs WHERE unique_key = ANY(%s::text[]) AND {s.UNIQUE_HELD_IN}"
)

_ONE_STATE = (
    f"CASE WHEN %(run_at)s::timestamptz > {NOW} THEN 'scheduled'"
    " WHEN %(concurrency_key)s::text IS NULL THEN 'ready' ELSE 'blocked' END"
)
INSERT_ONE = f"""
WITH inserted AS (
    INSERT INTO conveyor_jobs ({s.INSERT_COLUMNS})
    VALUES (%(name)s, %(queue)s, %(priority)s, {_ONE_STATE},
            %(args)s, %(kwargs)s, %(max_attempts)s, %(timeout)s,
            COALESCE(%(run_at)s::timestamptz, {NOW}), {NOW}, %(unique_key)s, %(concurrency_key)s,
            %(concurrency_max)s, %(unique_started)s, %(rate_key)s, %(rate_count)s,
            %(rate_period)s, %(sensitive)s)
    RETURNING id, state
)
SELECT id, {wake_if_ready("inserted")}, {notify_if_any("inserted")} FROM inserted
"""
# ids for a COPY, drawn in two steps: the sequence's name, then the ids from it named literally
# (pg_get_serial_sequence() inside the loop looked the name up again for every id: 8 us a job),
# all in one text value (1,000 rows of two values cost more to fetch than to draw)
ID_SEQUENCE = "SELECT pg_get_serial_sequence('conveyor_jobs', 'id'), COALESCE(%s::timestamptz, now())"
NEXT_IDS = "SELECT string_agg(nextval({})::text, ',') FROM generate_series(1, %s)"
COPY_JOBS_PLAIN = (
    "COPY conveyor_jobs (id, name, queue, priority, state, args, kwargs, max_attempts, timeout,"
    " run_at, created_at) FROM STDIN"
)
COPY_JOBS = (
    "COPY conveyor_jobs (id, name, queue, priority, state, args, kwargs, max_attempts, timeout,"
    " run_at, created_at, unique_key, concurrency_key, concurrency_max, rate_key, rate_count,"
    " rate_period, sensitive) FROM STDIN"
)

# --- jobs: claim and finish ---------------------------------------------------------------------
def claim_update(pick: str) -> str:
    """The claim: ready jobs of an unpaused queue become running under a new lease."""
    return f"""
UPDATE conveyor_jobs SET state = 'running', attempt = attempt + 1, worker_id = %(worker)s,
    lease = %(lease)s, started_at = {NOW}, heartbeat_at = {NOW}, finished_at = NULL,
    progress = NULL, progress_message = NULL,
    unique_key = CASE WHEN unique_started THEN NULL ELSE unique_key END
WHERE id IN (
    SELECT id FROM conveyor_jobs WHERE {pick} AND queue = %(queue)s
    ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
  AND NOT EXISTS (SELECT 1 FROM conveyor_queues WHERE name = %(queue)s AND paused)
RETURNING {s.JOB_COLUMNS}
"""


CLAIM = claim_update(s.PICK_READY)
CLAIM_SUSPECT = claim_update(s.PICK_SUSPECT)

# Outcomes arrive as one JSON array (encoded in C on both ends; psycopg dumps arrays in Python),
# their job ids also as an array literal, so the update finds its rows through the primary key.
# A successful attempt is the job row itself (started_at, finished_at, worker_id, attempt): only
# attempts that did not succeed get a conveyor_attempts row, with their error and traceback.
OUTCOMES_CTE = """o AS (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS t(
        ord int, job_id bigint, lease text, state text, outcome text, result text, error text,
        error_class text, error_message text, traceback text, retry_at float8, finished_at float8)
)"""
# a job that failed before a pending cancellation reached its worker is cancelled, not retried
_CANCEL_FAILED = f"j.cancel_requested AND o.state = 'failed' AND o.{s.UNHEARD}"
DONE_CTE = f"""done AS (
    UPDATE conveyor_jobs j SET
        state = CASE WHEN {_CANCEL_FAILED} THEN 'cancelled' ELSE o.state END,
        result = o.result, error = o.error, lease = NULL, heartbeat_at = NULL, lost_count = 0,
        finished_at = CASE WHEN {s.state_in(FINISHED_STATES, "o.state")} OR {_CANCEL_FAILED}
                           THEN COALESCE(to_timestamp(o.finished_at), {NOW}) END,
        run_at = COALESCE(to_timestamp(o.retry_at), j.run_at)
    FROM (SELECT DISTINCT ON (job_id, lease) * FROM o ORDER BY job_id, lease, ord) o
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.id = o.job_id AND j.lease = o.lease
      AND j.state = 'running'
    RETURNING o.ord, j.attempt, j.worker_id, j.started_at, j.concurrency_key, j.cancel_requested
)"""
RECORDED_CTE = f"""recorded AS (
    INSERT INTO conveyor_attempts ({s.ATTEMPT_COLUMNS})
    SELECT o.job_id, done.attempt, done.worker_id, done.started_at,
           COALESCE(to_timestamp(o.finished_at), {NOW}),
           CASE WHEN done.cancel_requested AND o.{s.UNHEARD}
                THEN '{AttemptOutcome.FINISHED_ANYWAY}' ELSE o.outcome END,
           o.error_class, o.error_message, o.traceback
    FROM o JOIN done USING (ord)
    WHERE o.outcome <> '{AttemptOutcome.SUCCEEDED}' OR done.cancel_requested ORDER BY ord
)"""
FINISH = (
    f"WITH {OUTCOMES_CTE}, {DONE_CTE}, {RECORDED_CTE}\n"
    f"SELECT ord, concurrency_key, {notify_if_any('done', '%(notify)s')} FROM done"
)
# finish then claim in ONE statement (one round trip, one commit): the CTEs touch disjoint rows,
# running ones fenced by lease for the outcomes, ready ones for the claim
FINISH_AND_CLAIM = f"""WITH {OUTCOMES_CTE}, {DONE_CTE}, {RECORDED_CTE},
claimed AS ({CLAIM})
SELECT acc.accepted, acc.freed, {notify_if_any("done", "%(notify)s")}, claimed.* FROM (
    SELECT array_agg(ord) AS accepted,
           array_agg(concurrency_key) FILTER (WHERE concurrency_key IS NOT NULL) AS freed
    FROM done) AS acc
LEFT JOIN claimed ON true
"""

RELEASE = f"""
WITH given AS (
    SELECT DISTINCT * FROM unnest(%(ids)s::bigint[], %(leases)s::text[]) AS t(id, lease)
), released AS (
    UPDATE conveyor_jobs j SET attempt = j.attempt - 1, lease = NULL, heartbeat_at = NULL,
        run_at = {NOW},
        state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'ready' END,
        finished_at = CASE WHEN j.cancel_requested THEN {NOW} END
    FROM given WHERE j.id = given.id AND j.lease = given.lease AND j.state = 'running'
    RETURNING j.id, j.attempt + 1 AS attempt, j.worker_id, j.started_at, j.state
), recorded AS (
    INSERT INTO conveyor_attempts ({s.ATTEMPT_COLUMNS})
    SELECT id, attempt, worker_id, started_at, {NOW}, '{AttemptOutcome.SHUTDOWN}', NULL,
           %(message)s, NULL
    FROM released WHERE %(started)s ORDER BY id
)
SELECT count(*), {wake_if_ready("released")}, {notify_if_any("released")} FROM released
"""


HEARTBEAT_JOB = (
    f"UPDATE conveyor_jobs SET heartbeat_at = {NOW} WHERE id = %(id)s AND lease = %(lease)s"
)
PROGRESS = f"""
WITH p AS (
    UPDATE conveyor_jobs SET heartbeat_at = {NOW}, progress = %(percent)s,
        progress_message = %(message)s
    WHERE id = %(id)s AND lease = %(lease)s RETURNING id
)
SELECT count(*), {notify_if_any("p", "%(notify)s")} FROM p
"""


LOG = (
    "INSERT INTO conveyor_logs (job_id, attempt, at, message)"
    f" VALUES (%(id)s, %(attempt)s, {NOW}, %(message)s)"
)
LOGS = "SELECT job_id, attempt, at, message FROM conveyor_logs WHERE job_id = %s ORDER BY id"
GET = f"SELECT {s.JOB_COLUMNS} FROM conveyor_jobs WHERE id = %s"
ATTEMPTS = s.attempts_query("%s")
STATE_OF = "SELECT state FROM conveyor_jobs WHERE id = %(id)s"


def ids_by_state(quiet: bool, queue: bool) -> str:
    sql = "SELECT id FROM conveyor_jobs WHERE state = %(state)s"
    sql += f" AND {s.QUIET_SQL}" if quiet else ""
    return sql + (" AND queue = %(queue)s" if queue else "") + " ORDER BY id"


# --- jobs: by hand -----------------------------------------------------------------------------
CANCEL_WAITING = (
    f"UPDATE conveyor_jobs SET state = 'cancelled', finished_at = {NOW}"
    f" WHERE id = %(id)s AND {s.WAITING_SQL}"
)
CANCEL_RUNNING = (
    "UPDATE conveyor_jobs SET cancel_requested = true,"
    f" cancel_requested_at = COALESCE(cancel_requested_at, {NOW})"
    " WHERE id = %(id)s AND state = 'running'"
)
RETRY = f"""
WITH retried AS (
    UPDATE conveyor_jobs SET state = {s.READY_OR_BLOCKED}, run_at = {NOW}, finished_at = NULL,
        max_attempts = GREATEST(max_attempts, attempt + 1), cancel_requested = false,
        cancel_requested_at = NULL, lost_count = 0
    WHERE id = ANY(%(ids)s) AND {s.state_in(RETRYABLE_STATES)}
    RETURNING state
)
SELECT count(*), {wake_if_ready("retried")}, {notify_if_any("retried")} FROM retried
"""
# data-modifying CTEs run to completion even when unreferenced
DELETE_CHILDREN = """
a AS (DELETE FROM conveyor_attempts WHERE job_id IN (SELECT id FROM gone)),
l AS (DELETE FROM conveyor_logs WHERE job_id IN (SELECT id FROM gone)),
d AS (DELETE FROM conveyor_job_dependencies WHERE job_id IN (SELECT id FROM gone))
"""
DISCARD = f"""
WITH gone AS (
    DELETE FROM conveyor_jobs WHERE id = ANY(%(ids)s) AND state <> 'running' RETURNING id
), {DELETE_CHILDREN}SELECT count(*), {notify_if_any("gone")} FROM gone"""

# --- time-driven duties -------------------------------------------------------------------------
OVERDUE = f"""
SELECT {s.JOB_COLUMNS} FROM conveyor_jobs
WHERE state = 'running' AND worker_id = ANY(%(workers)s) AND (
    (timeout IS NOT NULL
     AND started_at + (timeout + %(grace)s) * interval '1 second' < {NOW})
    OR (cancel_requested
        AND cancel_requested_at + %(cancel_grace)s * interval '1 second' < {NOW}))
ORDER BY id
"""

PRUNE = f"""
WITH gone AS (
    DELETE FROM conveyor_jobs WHERE id IN (
        SELECT id FROM conveyor_jobs
        WHERE (state = 'succeeded' AND finished_at < %(succeeded_before)s)
           OR (state IN ('dead', 'cancelled') AND finished_at < %(dead_before)s)
        LIMIT {PRUNE_BATCH} FOR UPDATE SKIP LOCKED)
    RETURNING id
), {DELETE_CHILDREN}SELECT count(*) FROM gone"""

PROMOTE = f"""
WITH promoted AS (
    UPDATE conveyor_jobs SET state = {s.READY_OR_BLOCKED}, run_at = LEAST(run_at, {NOW})
    WHERE id IN (
        SELECT id FROM conveyor_jobs WHERE state IN ('scheduled', 'failed')
          AND (run_at <= {NOW} OR (%(retries)s AND state = 'failed'))
        ORDER BY run_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING state
)
SELECT count(*), {wake_if_ready("promoted")}, {notify_if_any("promoted")} FROM promoted
"""

# held: what the dead process's supervisor saw it hold (job id -> waiting | running |
# finished); %(known)s false means unknown (a lost host), and every job counts as running
RESCUE = f"""
WITH seen AS (
    SELECT * FROM unnest(%(held_ids)s::bigint[], %(held_stages)s::text[]) AS t(id, stage)
), lost AS (
    SELECT j.id, CASE WHEN %(known)s THEN COALESCE(seen.stage, 'waiting') ELSE 'running' END
                 AS stage
    FROM conveyor_jobs j LEFT JOIN seen ON seen.id = j.id
    WHERE j.state = 'running' AND j.worker_id = ANY(%(workers)s)
    FOR UPDATE OF j
), rescued AS (
    UPDATE conveyor_jobs j SET
        state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'ready' END,
        attempt = j.attempt - 1, lease = NULL, heartbeat_at = NULL, run_at = {NOW},
        lost_count = j.lost_count + CASE WHEN lost.stage = 'running' THEN 1 ELSE 0 END,
        error = CASE lost.stage WHEN 'waiting' THEN j.error
                WHEN 'finished' THEN 'WorkerLost: ' || %(finished)s
                ELSE 'WorkerLost: ' || %(reason)s END,
        finished_at = CASE WHEN j.cancel_requested THEN {NOW} END
    FROM lost WHERE j.id = lost.id
    RETURNING j.id, j.attempt + 1 AS attempt, j.worker_id, j.started_at, j.state, lost.stage
), recorded AS (
    INSERT INTO conveyor_attempts ({s.ATTEMPT_COLUMNS})
    SELECT id, attempt, worker_id, started_at, {NOW}, '{AttemptOutcome.WORKER_LOST}',
           'WorkerLost', CASE stage WHEN 'finished' THEN %(finished)s ELSE %(reason)s END, NULL
    FROM rescued WHERE stage <> 'waiting' ORDER BY id
)
SELECT id, {wake_if_ready("rescued")}, {notify_if_any("rescued")} FROM rescued ORDER BY id
"""

# a job that killed the process it ran in alone: one more strike, dead at poison_after
LOST = f"""
WITH lost AS (
    UPDATE conveyor_jobs SET
        state = CASE WHEN lost_count + 1 >= %(poison_after)s THEN 'dead' ELSE 'ready' END,
        attempt = CASE WHEN lost_count + 1 >= %(poison_after)s THEN attempt ELSE attempt - 1 END,
        error = 'WorkerLost: ' || CASE WHEN lost_count + 1 >= %(poison_after)s
                                       THEN %(poisoned)s ELSE %(reason)s END,
        lost_count = lost_count + 1, lease = NULL, heartbeat_at = NULL, run_at = {NOW},
        finished_at = CASE WHEN lost_count + 1 >= %(poison_after)s THEN {NOW} END
    WHERE id = %(id)s AND lease = %(lease)s AND state = 'running'
    RETURNING id, CASE WHEN state = 'dead' THEN attempt ELSE attempt + 1 END AS attempt,
              worker_id, started_at, state, error
), recorded AS (
    INSERT INTO conveyor_attempts ({s.ATTEMPT_COLUMNS})
    SELECT id, attempt, worker_id, started_at, {NOW}, '{AttemptOutcome.WORKER_LOST}',
           'WorkerLost', substr(error, length('WorkerLost: ') + 1), NULL
    FROM lost
)
SELECT state, {wake_if_ready("lost")}, {notify_if_any("lost")} FROM lost
"""

SET_PAUSED = f"""
WITH q AS (
    INSERT INTO conveyor_queues (name, paused, updated_at) VALUES (%(name)s, %(paused)s, now())
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
    RETURNING name
)
SELECT {notify_if_any("q")} FROM q
"""

REGISTER = (
    f"WITH p AS (INSERT INTO conveyor_processes ({s.PROCESS_COLUMNS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{col} = excluded.{col}" for col in s.PROCESS_COLUMNS.split(", ")[1:])
    + f" RETURNING id) SELECT {notify_if_any('p')} FROM p"
)

HEARTBEAT = f"""
WITH beat AS (UPDATE conveyor_processes SET heartbeat_at = {NOW} WHERE id = %(id)s)
SELECT id, lease, cancel_requested FROM conveyor_jobs
WHERE state = 'running' AND worker_id = %(id)s ORDER BY id
"""


# --- conveyor doctor's aggregates (health_facts); %(at)s is the time they are measured at ------
HEALTH_CLOCK = "SELECT statement_timestamp(), COALESCE(%(now)s::timestamptz, statement_timestamp())"
HEALTH_STUCK = f"""
SELECT {s.JOB_COLUMNS} FROM conveyor_jobs WHERE state = 'running' AND (
    (timeout IS NOT NULL
     AND started_at + (timeout + %(grace)s) * interval '1 second' < %(at)s)
    OR NOT EXISTS (SELECT 1 FROM conveyor_processes p WHERE p.id = conveyor_jobs.worker_id
                   AND p.heartbeat_at >= %(at)s - %(stale)s * interval '1 second'))
ORDER BY started_at, id LIMIT %(limit)s
"""
HEALTH_OVERDUE = (
    "SELECT COUNT(*), MIN(run_at) FROM conveyor_jobs WHERE state IN ('scheduled', 'failed')"
    " AND run_at < %(at)s - %(overdue)s * interval '1 second'"
)
HEALTH_DEAD = (  # error is "Class: message" or "Class"
    "SELECT name, split_part(COALESCE(error, ''), ':', 1), COUNT(*) FROM conveyor_jobs"
    " WHERE state = 'dead' AND finished_at >= %(at)s - %(recent)s * interval '1 second'"
    " GROUP BY 1, 2"
)
HEALTH_UNKNOWN = (  # each part through its own partial index: never a scan of finished jobs
    "SELECT name, COUNT(*) FROM ("
    " SELECT name, error FROM conveyor_jobs WHERE state = 'ready'"
    " UNION ALL SELECT name, error FROM conveyor_jobs WHERE state IN ('scheduled', 'failed')"
    " UNION ALL SELECT name, error FROM conveyor_jobs WHERE state = 'dead'"
    "  AND finished_at >= %(at)s - %(recent)s * interval '1 second') AS w"
    " WHERE error = 'UnknownJob' OR error LIKE 'UnknownJob:%%' GROUP BY name"
)

DEREGISTER = (
    "WITH p AS (DELETE FROM conveyor_processes WHERE id = %s RETURNING id)"
    f" SELECT {notify_if_any('p')} FROM p"
)
PROCESSES = f"SELECT {s.PROCESS_COLUMNS} FROM conveyor_processes ORDER BY started_at, id"
STALE = (
    "SELECT id FROM conveyor_processes"
    f" WHERE heartbeat_at < {NOW} - make_interval(secs => %(age)s)"
    " UNION SELECT DISTINCT worker_id FROM conveyor_jobs WHERE state = 'running'"
    f" AND heartbeat_at < {NOW} - make_interval(secs => %(age)s)"
    " AND worker_id NOT IN (SELECT id FROM conveyor_processes) ORDER BY 1"
)
LEADER_TRY = "SELECT pg_try_advisory_lock(%s)"
LEADER_UNLOCK = "SELECT pg_advisory_unlock(%s)"
STILL_THERE = "SELECT 1"
LISTEN = f"LISTEN {CHANNEL}"
