"""Rate limits on PostgreSQL: a sliding-window log of starts per key, read and written under a
transaction-level advisory lock on the key, on the database's clock (read once the lock is
held), so every host counts the same starts. Claimed jobs of a key whose window is full go back
to 'scheduled' at the moment it has room (attempt not counted, fenced by their lease), and so do
the other ready jobs of that key, so claims stop picking them until then."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ...models import JobRecord
from .. import shared
from .connections import Conn

LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('conveyor:rate:' || %s, 0))"
CLOCK = "SELECT COALESCE(%s::timestamptz, clock_timestamp())"
FORGET = "DELETE FROM conveyor_rate_starts WHERE key = %s AND at <= %s"
WINDOW = "SELECT at FROM conveyor_rate_starts WHERE key = %s AND at > %s ORDER BY at"
LOG_STARTS = (
    "INSERT INTO conveyor_rate_starts (key, at) SELECT %s, %s FROM generate_series(1, %s)"
)
PUT_BACK = """
UPDATE conveyor_jobs j SET state = 'scheduled', run_at = %(next)s, attempt = j.attempt - 1,
    lease = NULL, worker_id = NULL, heartbeat_at = NULL, started_at = NULL
FROM unnest(%(ids)s::bigint[], %(leases)s::text[]) AS t(id, lease)
WHERE j.id = t.id AND j.lease = t.lease AND j.state = 'running'
"""
# an admitted job starts at the moment its start was logged, so the two always agree
STARTED = "UPDATE conveyor_jobs SET started_at = %s WHERE id = ANY(%s) AND state = 'running'"
BACKLOG = shared.rate_backlog_query("%s")
DEFER = (
    "UPDATE conveyor_jobs SET state = 'scheduled', run_at = GREATEST(run_at, %s)"
    " WHERE rate_key = %s AND state = 'ready'"
)


def admit(conn: Conn, jobs: Sequence[JobRecord], now: datetime | None) -> list[JobRecord]:
    """The claimed ``jobs`` that may start now; call inside a transaction (see the module)."""
    keys = sorted({j.rate_key for j in jobs if j.rate_key is not None})
    refused: set[int] = set()
    started: dict[int, datetime] = {}
    for key in keys:
        conn.execute(LOCK, (key,))
        row = conn.execute(CLOCK, (now,)).fetchone()
        assert row is not None
        at: datetime = row[0]
        group = [j for j in jobs if j.rate_key == key]
        count = group[0].rate_count or 1
        period = timedelta(seconds=group[0].rate_period or 1.0)
        conn.execute(FORGET, (key, at - period))
        window = [r[0] for r in conn.execute(WINDOW, (key, at - period)).fetchall()]
        room = max(0, count - len(window))
        if room:
            conn.execute(LOG_STARTS, (key, at, min(room, len(group))))
            conn.execute(STARTED, (at, [j.id for j in group[:room]]))
            started.update((j.id, at) for j in group[:room])
        if room >= len(group):
            continue
        window += [at] * room
        next_at = window[len(window) - count] + period  # when the oldest start that counts ages out
        back = group[room:]
        conn.execute(PUT_BACK, {"next": next_at, "ids": [j.id for j in back],
                                "leases": [j.lease for j in back]})
        conn.execute(DEFER, (next_at, key))
        refused.update(j.id for j in back)
    return [replace(j, started_at=started.get(j.id, j.started_at)) for j in jobs
            if j.id not in refused]
