"""Structured logs: one line per event, as text or JSON (``--log-format json``).

A worker logs a line per job event, from every slot thread. Writing each line where it is logged
would make every job format it, take the handler's lock and ``write(2)`` + flush it, with the
other slots queued behind that lock. So ``configure`` installs a ``Writer``: a thread that job
threads hand their records to (one append, no lock), and that formats them once and writes them in
batches, one ``write`` each, a few milliseconds after they were logged. Nothing is lost at a normal
exit or a SIGTERM: ``flush()`` writes what is pending and runs at exit, at ``logging.shutdown()``
and at the end of a worker process (which leaves through ``os._exit``, skipping atexit).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from datetime import UTC, datetime
from typing import TextIO

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
LINGER = 0.01  # seconds the writer waits after a wake-up, so that one write carries many lines


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class _Clock:
    """A record's time as text, the date part formatted once a second rather than once a line."""

    def __init__(self, pattern: str) -> None:
        self._pattern = pattern
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> tuple[str, float]:
        """(the second formatted with the pattern, the fraction of a second)."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._text = datetime.fromtimestamp(second, UTC).strftime(self._pattern)
        return self._text, created - second


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock("%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        clock, fraction = self._clock(record.created)
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        millis = int(fraction * 1000)
        line = f"{clock}.{millis:03d} {record.levelname:<7} [{record.process}] {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        clock, fraction = self._clock(record.created)
        data: dict[str, object] = {
            "ts": f"{clock}.{min(round(fraction * 1e6), 999_999):06d}+00:00",
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "event": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class Writer(logging.Handler):
    """A handler that formats and writes its records on a thread of its own, in batches.

    ``handle`` (on the logging thread) only appends the record to a deque, and wakes the writer
    if it sleeps; the writer formats each record once and writes a batch with one ``write`` and
    one ``flush``. Fork-safe: a child process gets a fresh queue and starts its own thread on its
    first record."""

    def __init__(self, stream: TextIO, linger: float = LINGER) -> None:
        super().__init__()
        self.stream = stream
        self.linger = linger
        self._records: deque[logging.LogRecord] = deque()
        self._wake = threading.Event()
        self._sleeping = False
        self._write_lock = threading.Lock()  # one batch written at a time: lines never interleave
        self._thread: threading.Thread | None = None
        self._closed = False
        ref = weakref.ref(self)

        def after_fork() -> None:
            handler = ref()
            if handler is not None:
                handler._after_fork()

        os.register_at_fork(after_in_child=after_fork)

    def handle(self, record: logging.LogRecord) -> bool:
        """No handler lock, no formatting here: queue the record for the writer thread."""
        if not self.filter(record):
            return False
        if record.args:  # render now: the arguments may change before the writer gets to them
            record.msg, record.args = record.getMessage(), None
        self._records.append(record)
        if self._thread is None:
            self._start()
        elif self._sleeping:
            self._sleeping = False
            self._wake.set()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def _start(self) -> None:
        with self._write_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="conveyor-log", daemon=True)
                self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child: the parent's thread and locks are not ours; what the parent had
        queued is the parent's to write."""
        self._records = deque()
        self._wake = threading.Event()
        self._sleeping = False
        self._write_lock = threading.Lock()
        self._thread = None
        self.createLock()

    def _run(self) -> None:
        while not self._closed:
            if not self._records:
                self._sleeping = True
                if not self._records:  # checked again after saying so: no wake-up is lost
                    self._wake.wait()
                self._wake.clear()
                self._sleeping = False
                time.sleep(self.linger)
            self._write_pending()

    def _write_pending(self) -> None:
        with self._write_lock:
            lines = []
            records = self._records
            while records:
                record = records.popleft()
                try:
                    lines.append(self.format(record))
                except Exception:
                    self.handleError(record)
            if not lines:
                return
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except Exception:
                # the stream is gone (a closed pipe): nothing to write to, and nothing to tell
                pass

    def flush(self) -> None:
        """Write every record queued so far, on the calling thread."""
        self._write_pending()

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._wake.set()
        super().close()


_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def flush() -> None:
    """Write every line logged so far (at exit; a worker process calls it before ``os._exit``)."""
    for writer in list(_writers):
        writer.flush()


atexit.register(flush)


def configure(log_format: str = "text", level: str | int = "INFO") -> None:
    """Send conveyor's logs to stderr in the chosen format (idempotent)."""
    root = logging.getLogger("conveyor")
    for handler in list(root.handlers):
        if getattr(handler, "_conveyor", False):
            root.removeHandler(handler)
            handler.close()
    handler = Writer(sys.stderr)
    handler._conveyor = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    _writers.add(handler)
    root.addHandler(handler)
    root.setLevel(os.environ.get("CONVEYOR_LOG_LEVEL", level) if isinstance(level, str) else level)
    root.propagate = False
