"""A schedule for the cron integration tests; workers import this as ``cronapp:app``.

One schedule, ``beat``, fires every second (misfire policy from CRON_TEST_MISFIRE and
CRON_TEST_GRACE). With CRON_TEST_POLICIES set, ``skip``, ``run_once`` and ``catch_up`` fire
every second too, each under that misfire policy, with a 2-second grace and max_catch_up=3.
Each run appends "<job id> <schedule>" to CONVEYOR_TEST_LOG. With CRON_TEST_ORPHAN set, the
code no longer defines ``gone-tomorrow``.
"""

from __future__ import annotations

import os
from datetime import timedelta

from conveyor import Conveyor, current_job

app = Conveyor(poll_interval=0.2)


@app.cron(
    every=timedelta(seconds=1), name="beat",
    misfire=os.environ.get("CRON_TEST_MISFIRE", "run_once"),
    misfire_grace=float(os.environ.get("CRON_TEST_GRACE", "60")),
    max_catch_up=int(os.environ.get("CRON_TEST_MAX_CATCH_UP", "10")),
)
def beat(tag: str = "beat") -> None:
    path = os.environ.get("CONVEYOR_TEST_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{current_job().id} {tag}\n".encode())
        finally:
            os.close(fd)


if os.environ.get("CRON_TEST_POLICIES"):
    for policy in ("skip", "run_once", "catch_up"):
        app.cron(None, beat, every=timedelta(seconds=1), name=policy, args=[policy],
                 misfire=policy, misfire_grace=2, max_catch_up=3)


if not os.environ.get("CRON_TEST_ORPHAN"):  # a test drops it from the code to orphan it

    @app.cron("@daily", name="gone-tomorrow")
    def daily() -> None: ...


