"""Run one suspect job alone in a fresh process, to tell a poison pill from its bystanders.

A job lost with its worker process ``SUSPECT_AT`` times in a row may have killed it, or may only
have been running beside the job that did (or beside a random kill). It runs once more, alone,
in a child forked for it and watched by its worker: if that child dies without an outcome, the
job killed it, and the store counts the strike (dead at ``POISON_AFTER``). If the worker itself
dies meanwhile, the child dies with it (PR_SET_PDEATHSIG), so the job never runs twice at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
from datetime import datetime
from typing import Any

from .. import executor, logs
from ..models import AttemptOutcome, JobOutcome, JobState
from ..store import open_store

_PR_SET_PDEATHSIG = 1
_TIMES = ("started_at", "retry_at", "finished_at")
_LOCAL = ("job", "error")  # stay in the process that made the outcome


def run_alone(rt: executor.Runtime, url: str, call: executor.Call) -> JobOutcome | str:
    """The job's outcome, or how the process running it alone died."""
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        os.close(read_end)
        os._exit(_child(rt, url, call, write_end, parent))
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0 and chunks:
        return _decode(b"".join(chunks))
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def _child(rt: executor.Runtime, url: str, call: executor.Call, out: int,
           parent: int) -> int:  # pragma: no cover
    try:
        _die_with_parent(parent)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when to stop
        call.context.report_to(open_store(url))  # the worker's connections are not ours
        assert call.definition is not None
        if call.definition.is_async:
            outcome = asyncio.run(executor.run_async(rt, call))
        else:
            outcome = executor.run_sync(rt, call)
        data = _encode(outcome)
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]
        return 0
    except BaseException:
        return 70
    finally:
        logs.flush()  # this process leaves through os._exit, past atexit


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the check below still catches a parent already gone
    if os.getppid() != parent:
        os._exit(71)


def _encode(outcome: JobOutcome) -> bytes:
    fields: dict[str, Any] = {name: getattr(outcome, name) for name in outcome.__slots__
                              if name not in _LOCAL}
    for name in _TIMES:
        value = fields[name]
        fields[name] = value.isoformat() if value is not None else None
    return json.dumps(fields).encode()


def _decode(data: bytes) -> JobOutcome:
    fields = json.loads(data)
    for name in _TIMES:
        if fields[name] is not None:
            fields[name] = datetime.fromisoformat(fields[name])
    fields["state"] = JobState(fields["state"])
    fields["outcome"] = AttemptOutcome(fields["outcome"])
    return JobOutcome(**fields)
