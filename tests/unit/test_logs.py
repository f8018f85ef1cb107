"""Logs are written off the logging threads, in batches, and none is lost at exit, after a fork,
or when a worker process leaves through os._exit."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from conveyor import logs


@pytest.fixture
def conveyor_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger("conveyor")
    saved = (list(root.handlers), root.level, root.propagate)
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def _writer_to(stream: io.StringIO, log_format: str) -> None:
    logs.configure(log_format, "INFO")
    writer = next(h for h in logging.getLogger("conveyor").handlers if isinstance(h, logs.Writer))
    writer.stream = stream


def test_lines_from_many_threads_are_all_written_whole(conveyor_logger: logging.Logger) -> None:
    out = io.StringIO()
    _writer_to(out, "text")
    log = logging.getLogger("conveyor.job")

    def job_thread(k: int) -> None:
        for i in range(500):
            log.info("job succeeded", extra={"job_id": k * 1000 + i, "queue": "default"})

    threads = [threading.Thread(target=job_thread, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logs.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4000
    assert all(" INFO    [" in line and line.endswith("queue=default") for line in lines)
    assert {int(line.split("job_id=")[1].split()[0]) for line in lines} == {
        k * 1000 + i for k in range(8) for i in range(500)}


def test_json_lines_carry_the_event_and_its_fields(conveyor_logger: logging.Logger) -> None:
    out = io.StringIO()
    _writer_to(out, "json")
    logging.getLogger("conveyor.job").warning("job %s", "failed, will retry",
                                              extra={"job_id": 7, "attempt": 2})
    logs.flush()
    data = json.loads(out.getvalue())
    assert (data["event"], data["level"], data["job_id"], data["attempt"]) == (
        "job failed, will retry", "warning", 7, 2)
    assert data["ts"].endswith("+00:00") and "T" in data["ts"]


def test_a_process_that_exits_or_leaves_through_os_exit_after_a_flush_loses_no_line() -> None:
    script = textwrap.dedent("""
        import logging, os
        from conveyor import logs
        logs.configure("text", "INFO")
        log = logging.getLogger("conveyor.worker")
        log.info("parent before fork")
        pid = os.fork()
        if pid == 0:
            for i in range(300):
                log.info("child line", extra={"i": i})
            logs.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        for i in range(300):
            log.info("parent line", extra={"i": i})
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert sum("child line" in line for line in lines) == 300
    assert sum("parent line" in line for line in lines) == 300
    assert sum("parent before fork" in line for line in lines) == 1  # not written again by the child


def test_a_job_line_without_a_record_reads_as_the_same_line_logged_as_a_record(
        conveyor_logger: logging.Logger) -> None:
    fields: dict[str, object] = {"job_id": 5, "job_name": "billing.charge", "queue": "default",
                                 "attempt": 1, "duration_ms": 0.5}
    log = logging.getLogger("conveyor.job")
    for log_format in ("text", "json"):
        out = io.StringIO()
        _writer_to(out, log_format)
        logs.line(log, logging.INFO, "job succeeded", fields)  # straight to the writer
        log.info("job succeeded", extra=fields)
        logs.flush()
        first, second = out.getvalue().splitlines()
        if log_format == "json":
            a, b = json.loads(first), json.loads(second)
            assert a.pop("ts") and b.pop("ts")
            assert a == b and a["event"] == "job succeeded" and a["job_id"] == 5
        else:
            assert first[12:] == second[12:]  # past the time
            assert first.endswith("job succeeded  job_id=5 job_name=billing.charge queue=default"
                                  " attempt=1 duration_ms=0.5")


def test_a_job_line_reaches_another_handler_or_filter_as_a_record(
        conveyor_logger: logging.Logger) -> None:
    out = io.StringIO()
    _writer_to(out, "text")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    job_log = logging.getLogger("conveyor.job")
    job_log.addHandler(keep := Keep())
    try:
        logs.line(job_log, logging.INFO, "job succeeded", {"job_id": 9})
    finally:
        job_log.removeHandler(keep)
    writer = next(h for h in conveyor_logger.handlers if isinstance(h, logs.Writer))
    dropped = logging.Filter("elsewhere")  # lets nothing of conveyor's through
    writer.addFilter(dropped)
    try:
        logs.line(job_log, logging.INFO, "job succeeded", {"job_id": 10})
    finally:
        writer.removeFilter(dropped)
    logs.flush()
    assert [(r.getMessage(), r.job_id) for r in seen] == [("job succeeded", 9)]  # type: ignore[attr-defined]
    assert seen[0].threadName == threading.current_thread().name and seen[0].process
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("job_id=9")  # the filtered one went nowhere
