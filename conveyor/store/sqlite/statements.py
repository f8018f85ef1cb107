"""The SQLite store's statements. Times are REAL seconds since the epoch, bound as parameters.
Conditions that should use a partial index repeat its predicate word for word (shared.*_SQL)."""

from __future__ import annotations

from ...models import RETRYABLE_STATES, AttemptOutcome, JobState
from .. import shared as s

# --- jobs: insert --------------------------------------------------------------------------------
INSERT = (
    f"INSERT INTO conveyor_jobs ({s.INSERT_COLUMNS})"
    f" VALUES ({', '.join('?' * len(s.INSERT_COLUMNS.split(',')))})"
)
INSERT_PLAIN = (
    f"INSERT INTO conveyor_jobs ({s.PLAIN_INSERT_COLUMNS})"
    f" VALUES ({', '.join('?' * len(s.PLAIN_INSERT_COLUMNS.split(',')))})"
)
PLAIN_WIDTH = len(s.PLAIN_INSERT_COLUMNS.split(","))
# a job whose unique key an unfinished job holds is not inserted: no row comes back
INSERT_UNLESS_HELD = f"{INSERT} ON CONFLICT (unique_key) WHERE {s.UNIQUE_HELD_OR} DO NOTHING RETURNING id"
HOLDER_OF_KEY = f"SELECT id FROM conveyor_jobs WHERE unique_key = ? AND {s.UNIQUE_HELD_OR}"
LAST_ID = "SELECT last_insert_rowid()"

# --- jobs: read ----------------------------------------------------------------------------------
GET = f"SELECT {s.JOB_COLUMNS} FROM conveyor_jobs WHERE id = ?"
ATTEMPTS = s.attempts_query("?")
LOGS = "SELECT job_id, attempt, at, message FROM conveyor_logs WHERE job_id = ? ORDER BY id"


def ids_by_state(state: JobState, queue: bool) -> str:
    sql = "SELECT id FROM conveyor_jobs WHERE state = ?"
    if s.quiet([state]):
        sql += f" AND {s.QUIET_SQL}"
    return sql + (" AND queue = ?" if queue else "") + " ORDER BY id"


def marks(n: int) -> str:
    """``?, ?, ?`` for n values."""
    return ", ".join("?" * n)


# --- jobs: claim and finish ----------------------------------------------------------------------
def _claim(pick: str) -> str:
    return (
        "UPDATE conveyor_jobs SET state = 'running', attempt = attempt + 1, worker_id = ?,"
        " lease = ?, started_at = ?, heartbeat_at = ?, finished_at = NULL, progress = NULL,"
        " progress_message = NULL, unique_key = CASE WHEN unique_started THEN NULL ELSE unique_key END"
        f" WHERE id IN (SELECT id FROM conveyor_jobs WHERE {pick} AND queue = ?"
        "   ORDER BY priority DESC, id LIMIT ?)"
        " AND NOT EXISTS (SELECT 1 FROM conveyor_queues WHERE name = ? AND paused = 1)"
        f" RETURNING {s.JOB_COLUMNS}"
    )


CLAIM = _claim(s.PICK_READY)
CLAIM_SUSPECT = _claim(s.PICK_SUSPECT)
# a lock-free look first: idle workers polling an empty queue never take the write lock
ANY_READY = f"SELECT 1 FROM conveyor_jobs WHERE {s.PICK_READY} AND queue = ? LIMIT 1"
ANY_SUSPECT = f"SELECT 1 FROM conveyor_jobs WHERE {s.PICK_SUSPECT} AND queue = ? LIMIT 1"
FINISH = (
    "UPDATE conveyor_jobs SET state = ?, result = ?, error = ?, lease = NULL,"
    " heartbeat_at = NULL, lost_count = 0, finished_at = ?, run_at = COALESCE(?, run_at)"
    " WHERE id = ? AND lease = ? AND state = 'running' RETURNING concurrency_key, cancel_requested"
)
# a job that failed before a pending cancellation reached its worker is cancelled, not retried
CANCEL_FAILED = "UPDATE conveyor_jobs SET state = 'cancelled', finished_at = ? WHERE id = ?"
RECORD_ATTEMPT = f"INSERT INTO conveyor_attempts ({s.ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
RECORD_LOST = (
    f"INSERT INTO conveyor_attempts ({s.ATTEMPT_COLUMNS})"
    f" VALUES (?, ?, ?, ?, ?, '{AttemptOutcome.WORKER_LOST}', 'WorkerLost', ?, NULL)"
)
RELEASE = (
    "UPDATE conveyor_jobs SET attempt = attempt - 1, lease = NULL, heartbeat_at = NULL, run_at = ?,"
    " state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'ready' END,"
    " finished_at = CASE WHEN cancel_requested THEN ? END"
    " WHERE id = ? AND lease = ? AND state = 'running' RETURNING attempt + 1, worker_id, started_at"
)
RECORD_SHUTDOWN = (
    f"INSERT INTO conveyor_attempts ({s.ATTEMPT_COLUMNS})"
    f" VALUES (?, ?, ?, ?, ?, '{AttemptOutcome.SHUTDOWN}', NULL, ?, NULL)"
)
HEARTBEAT_JOB = "UPDATE conveyor_jobs SET heartbeat_at = ? WHERE id = ? AND lease = ?"
PROGRESS = (
    "UPDATE conveyor_jobs SET heartbeat_at = ?, progress = ?, progress_message = ?"
    " WHERE id = ? AND lease = ?"
)
LOG = "INSERT INTO conveyor_logs (job_id, attempt, at, message) VALUES (?, ?, ?, ?)"

# --- jobs: by hand -------------------------------------------------------------------------------
CANCEL_WAITING = (
    f"UPDATE conveyor_jobs SET state = 'cancelled', finished_at = ? WHERE id = ? AND {s.WAITING_SQL}"
)
CANCEL_RUNNING = (
    "UPDATE conveyor_jobs SET cancel_requested = 1,"
    " cancel_requested_at = COALESCE(cancel_requested_at, ?) WHERE id = ? AND state = 'running'"
)
STATE_OF = "SELECT state FROM conveyor_jobs WHERE id = ?"


def retry(n: int) -> str:
    return (
        f"UPDATE conveyor_jobs SET state = {s.READY_OR_BLOCKED}, run_at = ?, finished_at = NULL,"
        " max_attempts = MAX(max_attempts, attempt + 1), cancel_requested = 0,"
        " cancel_requested_at = NULL, lost_count = 0"
        f" WHERE id IN ({marks(n)}) AND {s.state_in(RETRYABLE_STATES)}"
    )


def not_running(n: int) -> str:
    return f"SELECT id FROM conveyor_jobs WHERE id IN ({marks(n)}) AND state != 'running'"


def delete_where_in(table: str, column: str, n: int) -> str:
    return f"DELETE FROM {table} WHERE {column} IN ({marks(n)})"


JOB_TABLES = (("conveyor_attempts", "job_id"), ("conveyor_logs", "job_id"),
              ("conveyor_job_dependencies", "job_id"), ("conveyor_jobs", "id"))

# --- time-driven duties --------------------------------------------------------------------------
PROMOTE = (
    f"UPDATE conveyor_jobs SET state = {s.READY_OR_BLOCKED}, run_at = MIN(run_at, ?) WHERE id IN"
    " (SELECT id FROM conveyor_jobs WHERE state IN ('scheduled', 'failed') AND"
    " (run_at <= ? OR (? AND state = 'failed')) ORDER BY run_at LIMIT ?)"
)
PRUNABLE = (  # through the finished index: old rows only
    f"SELECT id FROM conveyor_jobs WHERE {s.FINISHED_SQL} AND finished_at < ?"
    " AND ((state = 'succeeded' AND finished_at < ?)"
    " OR (state IN ('dead', 'cancelled') AND finished_at < ?)) LIMIT 5000"
)


def overdue(n: int) -> str:
    return (
        f"SELECT {s.JOB_COLUMNS} FROM conveyor_jobs WHERE state = 'running'"
        f" AND worker_id IN ({marks(n)}) AND ((timeout IS NOT NULL AND started_at + timeout + ? < ?)"
        " OR (cancel_requested = 1 AND cancel_requested_at + ? < ?)) ORDER BY id"
    )


def running_of(n: int) -> str:
    return (
        "SELECT id, attempt, worker_id, started_at FROM conveyor_jobs"
        f" WHERE state = 'running' AND worker_id IN ({marks(n)})"
    )


RESCUE = (
    "UPDATE conveyor_jobs SET attempt = attempt - 1, lease = NULL,"
    " heartbeat_at = NULL, run_at = ?, lost_count = lost_count + ?,"
    " error = CASE WHEN ? THEN ? ELSE error END,"
    " state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'ready' END,"
    " finished_at = CASE WHEN cancel_requested THEN ? END WHERE id = ?"
)
LOST_HOLDER = (
    "SELECT attempt, worker_id, started_at, lost_count FROM conveyor_jobs"
    " WHERE id = ? AND lease = ? AND state = 'running'"
)
LOST = (
    "UPDATE conveyor_jobs SET state = ?, attempt = attempt - ?, lease = NULL,"
    " heartbeat_at = NULL, lost_count = lost_count + 1, error = ?, run_at = ?,"
    " finished_at = ? WHERE id = ?"
)

# --- queues and processes ------------------------------------------------------------------------
SET_PAUSED = (
    "INSERT INTO conveyor_queues (name, paused, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at"
)
REGISTER = (
    f"INSERT OR REPLACE INTO conveyor_processes ({s.PROCESS_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
HEARTBEAT = "UPDATE conveyor_processes SET heartbeat_at = ? WHERE id = ?"
HELD_BY = (
    "SELECT id, lease, cancel_requested FROM conveyor_jobs"
    " WHERE state = 'running' AND worker_id = ? ORDER BY id"
)
DEREGISTER = "DELETE FROM conveyor_processes WHERE id = ?"
PROCESSES = f"SELECT {s.PROCESS_COLUMNS} FROM conveyor_processes ORDER BY started_at, id"
STALE = (
    "SELECT id FROM conveyor_processes WHERE heartbeat_at < ?"
    " UNION SELECT DISTINCT worker_id FROM conveyor_jobs WHERE state = 'running'"
    " AND heartbeat_at < ? AND worker_id NOT IN (SELECT id FROM conveyor_processes)"
    " ORDER BY 1"
)
LEADER_ACQUIRE = (
    "INSERT INTO conveyor_leaders (name, holder, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
    " WHERE conveyor_leaders.holder = excluded.holder OR conveyor_leaders.expires_at < ?"
)
LEADER_RELEASE = "DELETE FROM conveyor_leaders WHERE name = ? AND holder = ?"
DATA_VERSION = "PRAGMA data_version"

# --- schema --------------------------------------------------------------------------------------
HAS_SCHEMA = "SELECT name FROM sqlite_master WHERE type='table' AND name='conveyor_schema'"
SCHEMA_VERSION = "SELECT MAX(version) FROM conveyor_schema"
CREATE_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS conveyor_schema (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
)
RECORD_VERSION = "INSERT INTO conveyor_schema (version, applied_at) VALUES (?, ?)"

# --- conveyor doctor's aggregates (health_facts) -------------------------------------------------
HEALTH_STUCK = (
    f"SELECT {s.JOB_COLUMNS} FROM conveyor_jobs WHERE state = 'running' AND ("
    " (timeout IS NOT NULL AND started_at + timeout + ? < ?)"
    " OR NOT EXISTS (SELECT 1 FROM conveyor_processes p"
    "   WHERE p.id = conveyor_jobs.worker_id AND p.heartbeat_at >= ?))"
    " ORDER BY started_at, id LIMIT ?"
)
HEALTH_OVERDUE = (
    "SELECT COUNT(*), MIN(run_at) FROM conveyor_jobs"
    " WHERE state IN ('scheduled', 'failed') AND run_at < ?"
)
HEALTH_DEAD = (  # error is "Class: message" or "Class"
    "SELECT name, CASE WHEN instr(COALESCE(error, ''), ':') > 0"
    " THEN substr(error, 1, instr(error, ':') - 1) ELSE COALESCE(error, '') END, COUNT(*)"
    f" FROM conveyor_jobs WHERE state = 'dead' AND {s.QUIET_SQL} AND finished_at >= ?"
    " GROUP BY 1, 2"
)
HEALTH_UNKNOWN = (  # each part through its own partial index: never a scan of finished jobs
    "SELECT name, COUNT(*) FROM ("
    " SELECT name, error FROM conveyor_jobs WHERE state = 'ready'"
    " UNION ALL SELECT name, error FROM conveyor_jobs WHERE state IN ('scheduled', 'failed')"
    f" UNION ALL SELECT name, error FROM conveyor_jobs WHERE state = 'dead' AND {s.QUIET_SQL}"
    " AND finished_at >= ?) AS w"
    " WHERE error = 'UnknownJob' OR error LIKE 'UnknownJob:%' GROUP BY name"
)
