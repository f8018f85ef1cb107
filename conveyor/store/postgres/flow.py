"""Flow control on PostgreSQL: admitting blocked jobs of concurrency keys, and the locks that keep
a unique key taken for ``unique_for`` after enqueue.

Admission is the one way a job of a concurrency key becomes ready. It runs under a
transaction-level advisory lock on each key (taken in key order, so two admissions never wait on
each other in a circle), in a statement begun after the lock is held: its snapshot sees every
slot given back before, and no other admission of that key runs beside it. Giving a slot back
(finish, cancel, rescue...) needs no lock: it only lowers the count; an admission follows it in a
transaction of its own, and the maintenance sweep (``jobs_promote``) admits whatever a crash
between the two left blocked."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from .connections import Conn
from .statements import NOW, wake_if_ready

LOCK_KEYS = (
    "SELECT count(pg_advisory_xact_lock(hashtextextended('conveyor:limit:' || key, 0)))"
    " FROM unnest(%(keys)s::text[]) AS t(key)"
)
# per key: how many hold a slot (ready or running), the head of its blocked jobs (its max is
# the key's), and as many blocked jobs as there are free slots, highest priority then oldest
SETTLE = f"""
WITH k AS (SELECT DISTINCT unnest(%(keys)s::text[]) AS key),
pick AS (
    SELECT b.id FROM k
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM conveyor_jobs
        WHERE concurrency_key = k.key AND state IN ('ready', 'running')) AS used
    CROSS JOIN LATERAL (
        SELECT COALESCE(concurrency_max, 1) AS m FROM conveyor_jobs
        WHERE concurrency_key = k.key AND state = 'blocked'
        ORDER BY priority DESC, id LIMIT 1) AS head
    CROSS JOIN LATERAL (
        SELECT id FROM conveyor_jobs WHERE concurrency_key = k.key AND state = 'blocked'
        ORDER BY priority DESC, id LIMIT GREATEST(head.m - used.n, 0)) AS b
), admitted AS (
    UPDATE conveyor_jobs j SET state = 'ready', run_at = LEAST(j.run_at, {NOW})
    FROM pick WHERE j.id = pick.id AND j.state = 'blocked'
    RETURNING j.state
)
SELECT count(*), {wake_if_ready("admitted")} FROM admitted
"""
BLOCKED_KEYS = (
    "SELECT DISTINCT concurrency_key FROM conveyor_jobs WHERE state = 'blocked'"
    " AND concurrency_key IS NOT NULL ORDER BY 1"
)
USAGE = (  # through each state's partial index
    "SELECT concurrency_key, count(*), 0, max(concurrency_max) FROM conveyor_jobs"
    " WHERE concurrency_key IS NOT NULL AND state IN ('ready', 'running')"
    " GROUP BY concurrency_key UNION ALL"
    " SELECT concurrency_key, 0, count(*), max(concurrency_max) FROM conveyor_jobs"
    " WHERE state = 'blocked' AND concurrency_key IS NOT NULL GROUP BY concurrency_key"
)

# unique_for: an expired lock is dropped, then each key is taken by the first job offering it;
# a key taken by another transaction waits for it, then counts as held
LOCKS_EXPIRE = f"DELETE FROM conveyor_unique_locks WHERE key = ANY(%(keys)s) AND until <= {NOW}"
LOCKS_TAKE = f"""
INSERT INTO conveyor_unique_locks (key, job_id, until)
SELECT DISTINCT ON (key) key, NULL, {NOW} + secs * interval '1 second'
FROM unnest(%(keys)s::text[], %(secs)s::float8[]) AS t(key, secs)
ON CONFLICT (key) DO NOTHING RETURNING key
"""
LOCKS_HELD = "SELECT key, job_id FROM conveyor_unique_locks WHERE key = ANY(%(keys)s)"
LOCKS_GIVE = (
    "UPDATE conveyor_unique_locks l SET job_id = t.id"
    " FROM unnest(%(keys)s::text[], %(ids)s::bigint[]) AS t(key, id) WHERE l.key = t.key"
)
LOCKS_DROP = "DELETE FROM conveyor_unique_locks WHERE key = ANY(%(keys)s)"
LOCKS_PRUNE = "DELETE FROM conveyor_unique_locks WHERE until <= now()"


def settle(
    conn: Conn, keys: Iterable[str | None], now: datetime | None, *, count: bool = True
) -> int:
    """Admit blocked jobs of ``keys`` to their free slots; call inside a transaction. How many
    were admitted (``count=False``: not read, so a pipeline need not wait for it; 0)."""
    wanted = sorted({k for k in keys if k is not None})
    if not wanted:
        return 0
    conn.execute(LOCK_KEYS, {"keys": wanted})
    cur = conn.execute(SETTLE, {"keys": wanted, "now": now})
    row = cur.fetchone() if count else None
    return 0 if row is None else int(row[0])


def settle_blocked(conn: Conn, now: datetime | None) -> int:
    """``settle`` every key a blocked job waits on."""
    keys = [r[0] for r in conn.execute(BLOCKED_KEYS).fetchall()]
    return settle(conn, keys, now)
