"""Jobs used by the integration tests; workers import this as ``jobsapp:app``.

The store comes from CONVEYOR_DATABASE_URL. Every job appends one line to the file named by
CONVEYOR_TEST_LOG when it runs, so tests can count executions across processes.
"""

from __future__ import annotations

import asyncio
import os
import time

from conveyor import Conveyor, Limit, Retry, current_job

app = Conveyor(poll_interval=0.2)


def record(*fields: object) -> None:
    path = os.environ.get("CONVEYOR_TEST_LOG")
    if path:
        line = " ".join(str(f) for f in (current_job().id, *fields)) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write of a short line: atomic with O_APPEND
        finally:
            os.close(fd)


@app.job
def square(x: int) -> int:
    record("square", x)
    return x * x


@app.job
async def async_square(x: int) -> int:
    await asyncio.sleep(0)
    record("async_square", x)
    return x * x


@app.job
def tag(label: str) -> str:
    record("tag", current_job().queue, label)
    return label


@app.job
def sleepy(seconds: float) -> str:
    record("sleepy-start", seconds)
    time.sleep(seconds)
    record("sleepy-end", seconds)
    return "rested"


@app.job(retry=Retry(attempts=4, backoff="fixed", base=0.1, jitter=0))
def flaky(fail_times: int) -> int:
    attempt = current_job().attempt
    record("flaky", attempt)
    if attempt <= fail_times:
        raise ConnectionError(f"simulated outage on attempt {attempt}")
    return attempt


@app.job(retry=Retry(attempts=3, backoff="fixed", base=0.1, jitter=0))
def always_fails() -> None:
    record("always_fails", current_job().attempt)
    raise RuntimeError("this job never works")


@app.job(retry=Retry(attempts=5, backoff="fixed", base=0.1, discard_on=(ValueError,)))
def rejects_input(value: str) -> None:
    record("rejects_input", current_job().attempt)
    raise ValueError(f"bad input {value!r}")


@app.job(retry=Retry(attempts=2, backoff="fixed", base=0.1, jitter=0))
def fails_once_then_works() -> str:
    """Dead on its first run when retried by hand only once the marker file exists."""
    record("fails_once", current_job().attempt)
    if not os.path.exists(os.environ.get("CONVEYOR_TEST_LOG", "") + ".ok"):
        raise RuntimeError("marker missing")
    return "ok"


@app.job(timeout=2, retry=Retry(attempts=2, backoff="fixed", base=0.1, jitter=0))
def hangs_on_a_socket() -> None:
    """Blocks in socket.recv, where no Python-level interruption reaches."""
    import socket

    record("hangs", current_job().attempt)
    a, _peer = socket.socketpair()  # the peer stays open and silent
    a.recv(1)  # nobody ever writes


@app.job(timeout=1, retry=Retry(attempts=1))
async def async_hangs() -> None:
    record("async_hangs", current_job().attempt)
    await asyncio.sleep(3600)


@app.job
def ignores_cancel(seconds: float) -> str:
    record("ignores_cancel")
    time.sleep(seconds)
    return "finished anyway"


@app.job
def honours_cancel() -> str:
    from conveyor import JobCancelled

    record("honours_cancel")
    for _ in range(600):
        if current_job().cancel_requested:
            raise JobCancelled("stopped on request")
        time.sleep(0.05)
    return "never asked"


@app.job(retry=Retry(attempts=2, backoff="fixed", base=0.1, jitter=0))
def long_then_quick() -> str:
    """Twenty seconds on its first run (long enough to be killed in), instant after. A run lost
    with its worker is not an attempt, so the run is told apart by a marker file."""
    attempt = current_job().attempt
    record("long_then_quick", attempt)
    marker = f"{os.environ.get('CONVEYOR_TEST_LOG', '/tmp/conveyor-test')}.ran-{current_job().id}"
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(20)
    return f"done on attempt {attempt}"


@app.job
def kills_its_process() -> None:
    """A poison pill: takes its whole worker process down every time it runs."""
    record("kills_its_process", current_job().attempt)
    time.sleep(0.2)  # long enough for the jobs beside it to be running too
    os._exit(1)


@app.job(retry=Retry(attempts=1))
def nested_result(depth: int) -> list[object]:
    """Returns a list nested ``depth`` levels deep: past the encoder's limit for large depths."""
    record("nested_result", depth)
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@app.job(retry=Retry(attempts=1))
def raises_odd_text() -> None:
    """An error message no database column takes as it is: a NUL and a lone surrogate."""
    record("raises_odd_text")
    raise ValueError("before\x00after \ud800 end")


_kept: list[bytearray] = []  # what leaky() leaves behind in its worker process


@app.job(max_memory="150MB", retry=Retry(attempts=1))
def hog(megabytes: int) -> int:
    """Holds ``megabytes`` of touched memory for a while: over its own limit if above 150."""
    record("hog", megabytes)
    block = bytearray(megabytes * 1_048_576)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(5)
    return len(block)


@app.job
def leaky(megabytes: int) -> int:
    """Leaves ``megabytes`` behind in its process: the process grows, the job succeeds."""
    record("leaky", os.getpid())
    block = bytearray(megabytes * 1_048_576)
    for i in range(0, len(block), 4096):
        block[i] = 1
    _kept.append(block)
    return os.getpid()


def _hold(key: int, seconds: float) -> int:
    record("keyed-start", key, repr(time.time()))
    time.sleep(seconds)
    record("keyed-end", key, repr(time.time()))
    return key


@app.job(concurrency=Limit(key=lambda key, seconds: f"k:{key}", max=1))
def one_per_key(key: int, seconds: float) -> int:
    return _hold(key, seconds)


@app.job(concurrency=Limit(key=lambda key, seconds: f"k2:{key}", max=2))
def two_per_key(key: int, seconds: float) -> int:
    return _hold(key, seconds)


@app.job(rate_limit="20/s")
def rated_call(n: int) -> int:
    return n


@app.job
def stamp() -> float:
    record("stamp", repr(time.time()))
    return time.time()


@app.job(retry=Retry(attempts=3, backoff="fixed", base=0.1, jitter=0))
def returns_when_cancelled() -> str:
    for _ in range(600):
        if current_job().cancel_requested:
            return "returned after the request"
        time.sleep(0.05)
    return "never asked"


@app.job
def reports_progress(flag: str) -> str:
    """Half done at once; finishes once the file ``flag`` exists (the browser tests watch it)."""
    current_job().progress(50, "halfway")
    deadline = time.monotonic() + 60
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.02)
    current_job().progress(100, "done")
    return "finished"


@app.job(retry=Retry(attempts=1))
def fails_at_once(n: int) -> None:
    raise RuntimeError(f"card {n} declined")
