"""The benchmark workload: a no-op job with one int argument."""

from __future__ import annotations

from conveyor import Conveyor

app = Conveyor()


@app.job
def noop(i: int) -> None:
    return None
