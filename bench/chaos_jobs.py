"""Jobs for the chaos run: mostly short, some seconds long with heartbeats.

Each execution appends ``S|E job attempt time`` lines to CONVEYOR_CHAOS_LOG (one short write with
O_APPEND each, so lines from many processes never interleave).
"""

from __future__ import annotations

import os
import time

from conveyor import Conveyor, Retry, current_job

app = Conveyor(poll_interval=0.2)


def _record(kind: str) -> None:
    job = current_job()
    line = f"{kind} {job.id} {job.attempt} {time.time():.3f}\n".encode()
    fd = os.open(os.environ["CONVEYOR_CHAOS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@app.job(retry=Retry(attempts=25, backoff="fixed", base=0.2))
def work(seconds: float) -> int:
    _record("S")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        if seconds > 0.2:
            current_job().heartbeat()
    _record("E")
    return current_job().attempt
