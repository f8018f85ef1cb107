"""What the dashboard reads from SQLite beside the jobs: argument search, the audit trail,
per-minute history and metric totals (migration 0007), and change notices.

A history sample counts inside a read transaction (a WAL snapshot: writers go on meanwhile),
then takes the write lock only to move the marks and write its rows; if another sampler
moved the marks in between, it writes nothing."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from ...models import AuditEntry, JobFilter, JobRecord, MetricTotal, MinuteStats
from .. import historyrows as h
from .. import shared
from . import statements as sql
from .connection import retry

T = TypeVar("T")
POLL = 0.2  # seconds between two looks at the change counter


def _p(name: str) -> str:
    return f":{name}"


def _seconds(later: str, earlier: str) -> str:
    return f"MAX({later} - {earlier}, 0)"


SAMPLE = h.sample_query(_p, _seconds)
MARK = h.mark(_p)
HISTORY_INSERT = h.history_insert("?")
TOTAL_ADD = h.total_add("?")
HISTORY_ALL = h.history_list(lambda _: "?", False)  # since
HISTORY_QUEUE = h.history_list(lambda _: "?", True)  # since, queue
HISTORY_PRUNE = "DELETE FROM conveyor_history WHERE minute < ?"
AUDIT_ADD = "INSERT INTO conveyor_audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)"
AUDIT_LIST = (
    f"SELECT {h.AUDIT_COLUMNS} FROM conveyor_audit WHERE (? IS NULL OR id < ?)"
    " ORDER BY id DESC LIMIT ?"
)


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _in_list(values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"IN ({sql.marks(len(values))})", list(values)


class ChangeWatch:
    """``PRAGMA data_version`` on a connection of its own: it changes whenever another
    connection (any process's, or this store's other ones) commits. Reads no table."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._seen: int | None = None
        self._lock = threading.Lock()

    def _version(self) -> int:
        if self._conn is None:
            plain = self.path != ":memory:" and not self.path.startswith("file:")
            target = f"file:{quote(os.path.abspath(self.path))}?mode=rw" if plain else self.path
            self._conn = sqlite3.connect(  # never creates the file
                target, timeout=30, isolation_level=None, check_same_thread=False, uri=plain
            )
        return int(self._conn.execute(sql.DATA_VERSION).fetchone()[0])

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._lock:
            try:
                while True:
                    now = retry(self.path, self._version)
                    if self._seen is None:
                        self._seen = now
                    if now != self._seen:
                        self._seen = now
                        return True
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    time.sleep(min(POLL, left))
            except Exception:  # never raises: a broken file looks like a change, after the wait
                self.close_locked()
        time.sleep(max(0.0, deadline - time.monotonic()))
        return True

    def close_locked(self) -> None:
        conn, self._conn, self._seen = self._conn, None, None
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    def close(self) -> None:
        with self._lock:
            self.close_locked()


class SQLiteHistory:
    """The search, audit and history methods of SQLiteStore."""

    if TYPE_CHECKING:
        path: str
        _changes: ChangeWatch

        def _conn(self) -> sqlite3.Connection: ...
        def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
        def _read(self, statement: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def _snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one read transaction: every statement sees the same snapshot."""
        conn = self._conn()

        def run() -> T:
            conn.execute("BEGIN")
            try:
                out = fn(conn)
            except BaseException:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out

        return retry(self.path, run)

    # --- search ------------------------------------------------------------------------------
    def job_search(
        self, filter: JobFilter, text: str, *, budget: int = 20_000
    ) -> tuple[list[JobRecord], int | None]:
        window, params = shared.search_window_query(filter.before_id, budget, "?")

        def run(conn: sqlite3.Connection) -> tuple[list[JobRecord], int | None]:
            row = conn.execute(window, params).fetchone()
            low = None if row is None else int(row[0])
            query, args = shared.job_search_query(filter, text, low, "?", _in_list, "LIKE")
            found = [shared.job_from_row(r, _dt) for r in conn.execute(query, args)]
            return found, shared.search_next(found, filter.limit, low)

        return self._snapshot(run)

    # --- audit ---------------------------------------------------------------------------------
    def audit_add(
        self, actor: str, action: str, target: str, detail: str = "", *,
        now: datetime | None = None,
    ) -> None:
        params = (time.time() if now is None else now.timestamp(), actor, action, target, detail)
        self._write(lambda conn: conn.execute(AUDIT_ADD, params))

    def audit_list(self, *, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        rows = self._read(AUDIT_LIST, (before_id, before_id, limit))
        return [h.audit_entry(r, _dt) for r in rows]

    # --- history -------------------------------------------------------------------------------
    def history_sample(self, now: datetime) -> bool:
        at = now.timestamp()

        def count(conn: sqlite3.Connection) -> tuple[h.Window, h.Tally] | None:
            marks = conn.execute(h.MARKS).fetchone()
            tops = conn.execute(h.TOPS).fetchone()
            win = h.window(now, marks, int(tops[0]), int(tops[1]), _dt)
            if win is None:
                return None
            rows = conn.execute(SAMPLE, self._params(win)).fetchall()
            ready = {q: (int(n), max(0.0, at - oldest)) for q, n, oldest in conn.execute(h.READY)}
            return win, h.tally(rows, ready)

        counted = self._snapshot(count)
        if counted is None:
            return False
        win, tally = counted
        minute = win.minute.timestamp()

        def write(conn: sqlite3.Connection) -> bool:
            if conn.execute(MARK, self._params(win)).fetchone() is None:
                return False  # another sampler got there first
            conn.executemany(HISTORY_INSERT, [(minute, *row) for row in tally.history])
            conn.executemany(TOTAL_ADD, tally.totals)
            return True

        return self._write(write)

    @staticmethod
    def _params(win: h.Window) -> dict[str, Any]:
        return {
            "minute": win.minute.timestamp(), "since": win.since.timestamp(),
            "until": win.until.timestamp(), "job_from": win.job_from, "job_to": win.job_to,
            "attempt_from": win.attempt_from, "attempt_to": win.attempt_to,
            "job_marked": win.marks[0], "attempt_marked": win.marks[1],
        }

    def history_list(self, since: datetime, *, queue: str | None = None) -> list[MinuteStats]:
        rows = (self._read(HISTORY_ALL, (since.timestamp(),)) if queue is None
                else self._read(HISTORY_QUEUE, (since.timestamp(), queue)))
        return [h.minute_stats(r, _dt) for r in rows]

    def metric_totals(self) -> list[MetricTotal]:
        return [h.metric_total(r) for r in self._read(h.TOTALS)]

    def history_prune(self, before: datetime) -> int:
        cutoff = before.timestamp()
        return int(self._write(lambda conn: conn.execute(HISTORY_PRUNE, (cutoff,)).rowcount))

    # --- change notices ------------------------------------------------------------------------
    def wait_for_changes(self, timeout: float) -> bool:
        """Polls the change counter every 0.2 s; any commit to the file counts (a heartbeat
        too), so True may come with nothing visible changed."""
        return self._changes.wait(timeout)
