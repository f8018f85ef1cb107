"""Flow control on SQLite: admitting blocked jobs of concurrency keys, and the locks that keep a
unique key taken for ``unique_for`` after enqueue. Every write holds SQLite's one write lock, so
a count read here cannot change before the admission that depends on it commits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

# jobs of a key holding a slot: admitted (ready) or running
ADMITTED = (
    "SELECT COUNT(*) FROM conveyor_jobs WHERE concurrency_key = ?"
    " AND concurrency_key IS NOT NULL AND (state = 'ready' OR state = 'running')"
)
# the blocked jobs of a key, next to admit first; the first one's max is the key's
BLOCKED_HEAD = (
    "SELECT id, concurrency_max FROM conveyor_jobs WHERE state = 'blocked'"
    " AND concurrency_key = ? ORDER BY priority DESC, id LIMIT ?"
)
ADMIT = "UPDATE conveyor_jobs SET state = 'ready', run_at = MIN(run_at, ?) WHERE id = ?"
BLOCKED_KEYS = (
    "SELECT DISTINCT concurrency_key FROM conveyor_jobs WHERE state = 'blocked'"
    " AND concurrency_key IS NOT NULL"
)
USAGE = (  # through each state's partial index
    "SELECT concurrency_key, COUNT(*), 0, MAX(concurrency_max) FROM conveyor_jobs"
    " WHERE concurrency_key IS NOT NULL AND (state = 'ready' OR state = 'running')"
    " GROUP BY concurrency_key UNION ALL"
    " SELECT concurrency_key, 0, COUNT(*), MAX(concurrency_max) FROM conveyor_jobs"
    " WHERE state = 'blocked' AND concurrency_key IS NOT NULL GROUP BY concurrency_key"
)
LOCK_EXPIRE = "DELETE FROM conveyor_unique_locks WHERE key = ? AND until <= ?"
LOCK_HOLDER = "SELECT job_id FROM conveyor_unique_locks WHERE key = ?"
LOCK_TAKE = "INSERT OR REPLACE INTO conveyor_unique_locks (key, job_id, until) VALUES (?, ?, ?)"
LOCKS_PRUNE = "DELETE FROM conveyor_unique_locks WHERE until <= ?"


def settle(conn: sqlite3.Connection, keys: Iterable[str | None], at: float) -> int:
    """Admit blocked jobs of ``keys`` while their key has a free slot, highest priority then
    oldest first; how many were admitted."""
    admitted = 0
    for key in sorted({k for k in keys if k is not None}):
        head = conn.execute(BLOCKED_HEAD, (key, 1)).fetchone()
        if head is None:
            continue
        free = (head[1] or 1) - conn.execute(ADMITTED, (key,)).fetchone()[0]
        if free <= 0:
            continue
        for job_id, _ in conn.execute(BLOCKED_HEAD, (key, free)).fetchall():
            conn.execute(ADMIT, (at, job_id))
            admitted += 1
    return admitted


def settle_blocked(conn: sqlite3.Connection, at: float) -> int:
    """``settle`` every key some blocked job waits on (after by-hand changes and sweeps)."""
    keys = [r[0] for r in conn.execute(BLOCKED_KEYS)]
    return settle(conn, keys, at) if keys else 0


def lock_holder(conn: sqlite3.Connection, key: str, at: float) -> int | None:
    """The job whose ``unique_for`` lock on ``key`` has not expired, or None."""
    conn.execute(LOCK_EXPIRE, (key, at))
    row = conn.execute(LOCK_HOLDER, (key,)).fetchone()
    return None if row is None else int(row[0])


def take_lock(conn: sqlite3.Connection, key: str, job_id: int, until: float) -> None:
    conn.execute(LOCK_TAKE, (key, job_id, until))
