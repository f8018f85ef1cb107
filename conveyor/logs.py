"""Structured logs: one line per event, as text or JSON (``--log-format json``).

A worker logs a line per job event, from every slot thread. Writing each line where it is logged
would make every job format it, take the handler's lock and ``write(2)`` + flush it, with the
other slots queued behind that lock. So ``configure`` installs a ``Writer``: a thread that job
threads hand their records to (one append, no lock), and that formats them once and writes them in
batches, one ``write`` each, a few milliseconds after they were logged. The line a worker logs
for every job (``line``) does not even make a record when that writer is its only destination:
the writer formats it from its parts, as the same line. Nothing is lost at a normal
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

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
LINGER = 0.01  # seconds the writer waits before each batch, so that one write carries many lines


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
        line = self.line(record.created, record.levelname, record.process, record.name,
                         record.getMessage(), _extras(record))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    def line(self, created: float, levelname: str, pid: int | None, logger: str, message: str,
             fields: dict[str, object]) -> str:
        clock, fraction = self._clock(created)
        line = f"{clock}.{int(fraction * 1000):03d} {levelname:<7} [{pid}] {message}"
        if fields:
            line += "  " + " ".join([f"{k}={v}" for k, v in fields.items()])
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        data = self._data(record.created, record.levelname, record.process, record.name,
                          record.getMessage(), _extras(record))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)

    def line(self, created: float, levelname: str, pid: int | None, logger: str, message: str,
             fields: dict[str, object]) -> str:
        return json.dumps(self._data(created, levelname, pid, logger, message, fields), default=str)

    def _data(self, created: float, levelname: str, pid: int | None, logger: str, message: str,
              fields: dict[str, object]) -> dict[str, object]:
        clock, fraction = self._clock(created)
        return {
            "ts": f"{clock}.{min(round(fraction * 1e6), 999_999):06d}+00:00",
            "level": levelname.lower(),
            "pid": pid,
            "logger": logger,
            "event": message,
            **fields,
        }


# a line logged without a LogRecord (see ``line``): (created, level, logger, message, fields)
Line = tuple[float, int, str, str, dict[str, object]]


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
        self._records: deque[logging.LogRecord | Line] = deque()
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
        self.put(record)
        return True

    def put(self, item: logging.LogRecord | Line) -> None:
        self._records.append(item)
        if self._thread is None:
            self._start()
        elif self._sleeping:
            self._sleeping = False
            self._wake.set()

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
        # after every batch, not only after a wake-up: a writer that went straight on with the
        # few records logged while it wrote would hold the GIL most of the time, in many small
        # turns, and a thread back from I/O (a claim's reply) would wait behind each of them
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
            formatter = self.formatter
            direct = isinstance(formatter, (TextFormatter, JsonFormatter))
            pid = os.getpid()
            while records:
                item = records.popleft()
                if isinstance(item, tuple):
                    if direct:
                        created, level, logger, message, fields = item
                        lines.append(formatter.line(  # type: ignore[union-attr]
                            created, _LEVEL_NAMES.get(level) or logging.getLevelName(level),
                            pid, logger, message, fields))
                        continue
                    item = _record_of(item)  # the formatter was replaced since
                try:
                    lines.append(self.format(item))
                except Exception:
                    self.handleError(item)
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


class _Template:
    """The attributes a logger's records share in one process, so that a line logged on every
    job is made by copying them, not by ``LogRecord.__init__`` (which looks up the process and
    thread names and splits the file name each time)."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, int, str], dict[str, object]] = {}
        os.register_at_fork(after_in_child=self._made.clear)  # a child: its own pid and name

    def get(self, logger: str, level: int, pathname: str) -> dict[str, object]:
        key = (logger, level, pathname)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = logging.LogRecord(
                logger, level, pathname, 0, "", (), None).__dict__.copy()
        return made


_template = _Template()


_LEVEL_NAMES = {level: logging.getLevelName(level) for level in (
    logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)}


def line(logger: logging.Logger, level: int, message: str, fields: dict[str, object],
         pathname: str = __file__) -> None:
    """Log ``message`` with ``fields`` (as ``extra=``) at ``level``, which the caller checked is
    enabled. A line logged on every job: when its only destination is conveyor's own ``Writer``
    (no other handler, no filter, the default record factory: what ``configure`` sets up), it
    goes there as a tuple, and the writer thread formats it as it would the record, which is
    then never made. Otherwise it is a record through ``logger.handle``, as ``logger.log``."""
    writer = _only_writer(logger, level)
    if writer is not None:
        writer.put((time.time(), level, logger.name, message, fields))
    else:
        logger.handle(record(logger, level, message, fields, pathname))


def _only_writer(logger: logging.Logger, level: int) -> Writer | None:
    """conveyor's ``Writer``, if a record of ``logger`` at ``level`` would reach it and nothing
    else (but a ``NullHandler``) would see that record on the way."""
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    found: Writer | None = None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters or node.disabled:
            return None
        for handler in node.handlers:
            if type(handler) is logging.NullHandler:  # a library's default: sees nothing
                continue
            if found is not None or not isinstance(handler, Writer) or handler.filters:
                return None
            if level < handler.level or not isinstance(handler.formatter,
                                                      (TextFormatter, JsonFormatter)):
                return None
            found = handler
        if not node.propagate:
            break
        node = node.parent
    return found


def _record_of(item: Line) -> logging.LogRecord:
    created, level, logger, message, fields = item
    rec = record(logging.getLogger(logger), level, message, fields)
    rec.created = created
    return rec


def record(logger: logging.Logger, level: int, message: str, fields: dict[str, object],
           pathname: str = __file__) -> logging.LogRecord:
    """A record of ``message`` with ``fields`` as attributes (``extra=``), made cheaply: what
    ``logger.makeRecord`` makes, for a fixed message without arguments. With a record factory of
    the application's own (``logging.setLogRecordFactory``), that factory makes it."""
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return logger.makeRecord(logger.name, level, pathname, 0, message, (), None, extra=fields)
    rec: logging.LogRecord = logging.LogRecord.__new__(logging.LogRecord)
    attrs = rec.__dict__
    attrs.update(_template.get(logger.name, level, pathname))
    now = time.time()
    attrs["msg"] = message
    attrs["created"] = now
    attrs["msecs"] = int((now - int(now)) * 1000) + 0.0
    attrs["relativeCreated"] = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
    attrs["thread"] = threading.get_ident()
    attrs["threadName"] = threading.current_thread().name
    attrs.update(fields)
    return rec


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
