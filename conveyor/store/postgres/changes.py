"""Change notices for live views: writes that change jobs, queues or processes send
``NOTIFY conveyor_changes`` (at most one per transaction, empty payload, delivered on commit)
in the statement that makes the change, and ``wait_for_changes`` LISTENs on a connection of
its own. The claim sends none: a claim is followed by a finish or a progress report, which do."""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:  # connections imports statements, which import this module
    from .connections import Conn

CHANNEL = "conveyor_changes"
# a statement of its own, for transactions of several statements
CHANGED = f"SELECT pg_notify('{CHANNEL}', '')"


def notify_if_any(source: str) -> str:
    """A scalar that sends the notice (once, on commit) if ``source`` has a row: evaluated
    once per statement, and only when the statement returns a row."""
    return (
        f"(SELECT count(pg_notify('{CHANNEL}', '')) FROM"
        f" (SELECT 1 FROM {source} LIMIT 1) AS changed)"
    )


class ChangeListener:
    """A LISTEN conveyor_changes connection. Notices that arrive between two calls wait in
    the connection, so the next call reports them at once."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: Conn | None = None
        self._lock = threading.Lock()
        self._listened = False  # once listening, a new connection may have missed notices

    def wait(self, timeout: float) -> bool:
        """True once a notice arrived since the previous call, within ``timeout`` seconds, or
        after the connection was replaced; never raises: a broken connection is dropped, the
        timeout slept out, and True returned (changes may have been missed)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self._conninfo, autocommit=True)
                    self._conn.execute(f"LISTEN {CHANNEL}")
                    if self._listened:
                        return True
                    self._listened = True
                return self._notified(self._conn, max(timeout, 0.0))
            except psycopg.Error:
                _close(self._conn)
                self._conn = None
        time.sleep(max(0.0, deadline - time.monotonic()))
        return True

    @staticmethod
    def _notified(conn: Conn, timeout: float) -> bool:
        got = any(True for _ in conn.notifies(timeout=0))  # waiting since the previous call
        if not got:
            got = any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
        for _ in conn.notifies(timeout=0):  # one answer per burst
            pass
        return got

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        _close(conn)


def _close(conn: Conn | None) -> None:
    if conn is not None:
        with suppress(Exception):
            conn.close()
