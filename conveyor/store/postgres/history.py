"""What the dashboard reads from PostgreSQL beside the jobs: argument search, the audit trail,
per-minute history and metric totals (migration 0007), and change notices (see changes.py).

A history sample counts and writes in one transaction; two samplers at once both count, and
the marks' upsert lets only the first write (the second waits on the row, then finds it
moved)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...models import AuditEntry, JobFilter, JobRecord, MetricTotal, MinuteStats
from .. import historyrows as h
from .. import shared

if TYPE_CHECKING:
    from .changes import ChangeListener
    from .connections import Conn, Connections


def _p(name: str) -> str:
    return f"%({name})s"


def _seconds(later: str, earlier: str) -> str:
    # GREATEST ignores NULLs: keep a missing time missing
    return (f"CASE WHEN {later} IS NOT NULL AND {earlier} IS NOT NULL"
            f" THEN GREATEST(EXTRACT(EPOCH FROM {later} - {earlier})::float8, 0) END")


NOW = "COALESCE(%(now)s::timestamptz, now())"
SAMPLE = h.sample_query(_p, _seconds)
MARK = h.mark(_p)
HISTORY_INSERT = h.history_insert("%s")
TOTAL_ADD = h.total_add("%s")
HISTORY_ALL, HISTORY_QUEUE = h.history_list(_p, False), h.history_list(_p, True)
HISTORY_PRUNE = "DELETE FROM conveyor_history WHERE minute < %s"
AUDIT_ADD = (
    "INSERT INTO conveyor_audit (at, actor, action, target, detail)"
    f" VALUES ({NOW}, %(actor)s, %(action)s, %(target)s, %(detail)s)"
)
AUDIT_LIST = (
    f"SELECT {h.AUDIT_COLUMNS} FROM conveyor_audit"
    " WHERE (%(before)s::bigint IS NULL OR id < %(before)s) ORDER BY id DESC LIMIT %(limit)s"
)


def _dt(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _any(values: Sequence[Any]) -> tuple[str, list[Any]]:
    return "= ANY(%s)", [list(values)]


class PostgresHistory:
    """The search, audit and history methods of PostgresStore."""

    if TYPE_CHECKING:
        _db: Connections
        _changes: ChangeListener

        def _rows(
            self, statement: Any, params: Sequence[Any] | dict[str, Any] = ()
        ) -> list[Any]: ...

    # --- search ------------------------------------------------------------------------------
    def job_search(
        self, filter: JobFilter, text: str, *, budget: int = 20_000
    ) -> tuple[list[JobRecord], int | None]:
        window, params = shared.search_window_query(filter.before_id, budget, "%s")
        with self._db.connect() as conn:
            row = conn.execute(window, params).fetchone()
            low = None if row is None else int(row[0])
            query, args = shared.job_search_query(filter, text, low, "%s", _any, "ILIKE")
            found = [shared.job_from_row(r, _dt) for r in conn.execute(query, args).fetchall()]
        return found, shared.search_next(found, filter.limit, low)

    # --- audit ---------------------------------------------------------------------------------
    def audit_add(
        self, actor: str, action: str, target: str, detail: str = "", *,
        now: datetime | None = None,
    ) -> None:
        params = {"now": now, "actor": actor, "action": action, "target": target,
                  "detail": detail}
        with self._db.connect() as conn:
            conn.execute(AUDIT_ADD, params)

    def audit_list(self, *, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        rows = self._rows(AUDIT_LIST, {"before": before_id, "limit": limit})
        return [h.audit_entry(r, _dt) for r in rows]

    # --- history -------------------------------------------------------------------------------
    def history_sample(self, now: datetime) -> bool:
        with self._db.tx() as conn:
            marks = conn.execute(h.MARKS).fetchone()
            tops = conn.execute(h.TOPS).fetchone()
            assert tops is not None
            win = h.window(now, marks, int(tops[0]), int(tops[1]), _dt)
            if win is None:
                return False
            params = self._params(win)
            rows = conn.execute(SAMPLE, params).fetchall()
            ready = {q: (int(n), max(0.0, (now - oldest).total_seconds()))
                     for q, n, oldest in conn.execute(h.READY).fetchall()}
            tally = h.tally(rows, ready)
            return self._record(conn, win, params, tally)

    @staticmethod
    def _record(conn: Conn, win: h.Window, params: dict[str, Any], tally: h.Tally) -> bool:
        if conn.execute(MARK, params).fetchone() is None:
            return False  # another sampler got there first
        with conn.cursor() as cur:
            cur.executemany(HISTORY_INSERT, [(win.minute, *row) for row in tally.history])
            cur.executemany(TOTAL_ADD, tally.totals)
        return True

    @staticmethod
    def _params(win: h.Window) -> dict[str, Any]:
        return {
            "minute": win.minute, "since": win.since, "until": win.until,
            "job_from": win.job_from, "job_to": win.job_to,
            "attempt_from": win.attempt_from, "attempt_to": win.attempt_to,
            "job_marked": win.marks[0], "attempt_marked": win.marks[1],
        }

    def history_list(self, since: datetime, *, queue: str | None = None) -> list[MinuteStats]:
        statement = HISTORY_ALL if queue is None else HISTORY_QUEUE
        rows = self._rows(statement, {"since": since, "queue": queue})
        return [h.minute_stats(r, _dt) for r in rows]

    def metric_totals(self) -> list[MetricTotal]:
        return [h.metric_total(r) for r in self._rows(h.TOTALS)]

    def history_prune(self, before: datetime) -> int:
        with self._db.connect() as conn:
            return conn.execute(HISTORY_PRUNE, (before,)).rowcount

    # --- change notices ------------------------------------------------------------------------
    def wait_for_changes(self, timeout: float) -> bool:
        """LISTEN conveyor_changes on a connection of its own (see changes.py)."""
        return self._changes.wait(timeout)
