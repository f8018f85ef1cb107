"""Rate limits on SQLite: a sliding-window log of starts per key. Claimed jobs of a key whose
window is full go back to 'scheduled' at the moment it has room (attempt not counted), and so
do the other ready jobs of that key, so claims stop picking them until then."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ...models import JobRecord
from .. import shared

FORGET = "DELETE FROM conveyor_rate_starts WHERE key = ? AND at <= ?"
WINDOW = "SELECT at FROM conveyor_rate_starts WHERE key = ? AND at > ? ORDER BY at"
LOG_START = "INSERT INTO conveyor_rate_starts (key, at) VALUES (?, ?)"
PUT_BACK = (
    "UPDATE conveyor_jobs SET state = 'scheduled', run_at = ?, attempt = attempt - 1,"
    " lease = NULL, worker_id = NULL, heartbeat_at = NULL, started_at = NULL"
    " WHERE id = ? AND lease = ? AND state = 'running'"
)
BACKLOG = shared.rate_backlog_query("?")
DEFER = (
    "UPDATE conveyor_jobs SET state = 'scheduled', run_at = MAX(run_at, ?)"
    " WHERE rate_key = ? AND rate_key IS NOT NULL AND state = 'ready'"
)


def admit(conn: sqlite3.Connection, jobs: Sequence[JobRecord], at: float) -> list[JobRecord]:
    """The claimed ``jobs`` that may start now (every one without a rate key, and as many of
    each rate key as its window has room for, in claim order); the others are put back."""
    keys = sorted({j.rate_key for j in jobs if j.rate_key is not None})
    if not keys:
        return list(jobs)
    refused: set[int] = set()
    for key in keys:
        group = [j for j in jobs if j.rate_key == key]
        count, period = group[0].rate_count or 1, group[0].rate_period or 1.0
        conn.execute(FORGET, (key, at - period))
        window = [r[0] for r in conn.execute(WINDOW, (key, at - period))]
        room = max(0, count - len(window))
        conn.executemany(LOG_START, [(key, at)] * min(room, len(group)))
        if room >= len(group):
            continue
        window += [at] * room
        next_at = window[len(window) - count] + period  # when the oldest start that counts ages out
        for job in group[room:]:
            conn.execute(PUT_BACK, (next_at, job.id, job.lease))
            refused.add(job.id)
        conn.execute(DEFER, (next_at, key))
    return [j for j in jobs if j.id not in refused]
