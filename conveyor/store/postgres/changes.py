"""Change notices for live views: writes that change jobs, queues or processes send
``NOTIFY conveyor_changes`` (at most one per transaction, empty payload, delivered on commit)
in the statement that makes the change, and ``wait_for_changes`` LISTENs on a connection of
its own. The claim sends none: a claim is followed by a finish or a progress report, which do.

A notifying commit holds a database-wide lock until it is durable, so commits that notify are
written one at a time (measured: 16 connections committing one-row updates, each notifying,
got a third of the throughput of the same without). Finishes and progress reports, the writes
every job makes, therefore notify at most once per ``NOTICE_EVERY`` seconds per store object
(``Throttle``); one made without is announced once that period ends, so a live view hears of
every change within it. The others are rare, or notify conveyor_jobs in the same transaction
already, and always notify."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING

import psycopg

if TYPE_CHECKING:  # connections imports statements, which import this module
    from .connections import Conn

CHANNEL = "conveyor_changes"
NOTICE_EVERY = 0.5  # seconds: the most often one store object's finishes notify
# a statement of its own, for transactions of several statements
CHANGED = f"SELECT pg_notify('{CHANNEL}', '')"


def notify_if_any(source: str, when: str = "true") -> str:
    """A scalar that sends the notice (once, on commit) if ``source`` has a row and ``when``
    holds: evaluated once per statement, and only when the statement returns a row."""
    return (
        f"(SELECT count(pg_notify('{CHANNEL}', '')) FROM"
        f" (SELECT 1 FROM {source} WHERE {when} LIMIT 1) AS changed)"
    )


class Throttle:
    """Whether a hot write carries the notice: the first in each period does; one that went
    without calls ``owe`` once it committed, and ``send`` runs when the period ends (on a timer
    thread; its failure is ignored: the next notice tells the same)."""

    def __init__(self, send: Callable[[], object], every: float = NOTICE_EVERY) -> None:
        self._send = send
        self._every = every
        self._last = float("-inf")
        self._timer: threading.Timer | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._every:
                return False
            self._last = now
            return True

    def owe(self) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked copy: the parent's timer is not here
                self._pid, self._timer = os.getpid(), None
            if self._timer is not None or self._closed:
                return  # the pending notice goes after this write committed: it covers it
            delay = max(0.0, self._last + self._every - time.monotonic())
            self._timer = threading.Timer(delay, self._pay)
            self._timer.daemon = True
            self._timer.start()

    def _pay(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        with suppress(Exception):
            self._send()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()


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
