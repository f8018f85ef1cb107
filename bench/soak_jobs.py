"""Jobs for the soak run: short and long, sync and async, failing, overrunning, self-killing.

Each execution appends ``S job attempt pid time kind`` when it starts and ``E ... kind how`` when
its body ends (``ok``, or the exception's class, cancellation included; nothing if its process
died) to CONVEYOR_SOAK_LOG: one short write with O_APPEND each, so lines never interleave.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from conveyor import Conveyor, Retry, current_job

app = Conveyor(poll_interval=0.2)
QUICK_RETRY = Retry(attempts=4, backoff="fixed", base=0.2, jitter=0)


def _record(mark: str, kind: str, how: str = "") -> None:
    job = current_job()
    line = f"{mark} {job.id} {job.attempt} {os.getpid()} {time.time():.3f} {kind} {how}\n".encode()
    fd = os.open(os.environ["CONVEYOR_SOAK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@contextmanager
def _recorded(kind: str) -> Iterator[None]:
    _record("S", kind)
    ended = "ok"
    try:
        yield
    except BaseException as e:  # failures, timeouts and cancellations alike
        ended = type(e).__name__
        raise
    finally:
        _record("E", kind, ended)


def _sleep(seconds: float) -> None:
    """Sleep, heartbeating every half second on long sleeps."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        if seconds > 1:
            current_job().heartbeat()


@app.job(retry=QUICK_RETRY)
def quick(ms: float) -> int:
    with _recorded("quick"):
        time.sleep(ms / 1000)
    return current_job().attempt


@app.job(retry=QUICK_RETRY)
async def aquick(ms: float) -> int:
    with _recorded("aquick"):
        await asyncio.sleep(ms / 1000)
    return current_job().attempt


@app.job(timeout=120, retry=QUICK_RETRY)
def long(seconds: float) -> float:
    with _recorded("long"):
        _sleep(seconds)
    return seconds


@app.job(retry=QUICK_RETRY)
def flaky(fail_times: int, ms: float) -> int:
    """Fails its first ``fail_times`` attempts (fewer than its four), then works."""
    with _recorded("flaky"):
        time.sleep(ms / 1000)
        if current_job().attempt <= fail_times:
            raise ConnectionError(f"simulated outage on attempt {current_job().attempt}")
    return current_job().attempt


@app.job(retry=QUICK_RETRY)
async def aflaky(fail_times: int, ms: float) -> int:
    with _recorded("aflaky"):
        await asyncio.sleep(ms / 1000)
        if current_job().attempt <= fail_times:
            raise ConnectionError(f"simulated outage on attempt {current_job().attempt}")
    return current_job().attempt


@app.job(timeout=1, retry=Retry(attempts=3, backoff="fixed", base=0.2, jitter=0))
def overrun(seconds: float) -> int:
    """Blocks past its timeout on the first attempt (stopped from outside), quick after."""
    with _recorded("overrun"):
        time.sleep(seconds if current_job().attempt == 1 else 0.01)
    return current_job().attempt


@app.job(timeout=1, retry=Retry(attempts=3, backoff="fixed", base=0.2, jitter=0))
async def aoverrun(seconds: float) -> int:
    """Awaits past its timeout on the first attempt (cancelled in its loop), quick after."""
    with _recorded("aoverrun"):
        await asyncio.sleep(seconds if current_job().attempt == 1 else 0.01)
    return current_job().attempt


@app.job(retry=QUICK_RETRY)
def kills_itself(how: str) -> None:
    """A poison pill: takes its process down every time it runs."""
    _record("S", "kills_itself")
    time.sleep(0.1)  # long enough for the jobs beside it to be running too
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)
