"""Jobs as rows in COPY's text format, built in one pass: psycopg's ``write_row()`` formats each
value through its dumpers, which costs more than the database's own work per row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ...models import NewJob
from .. import shared

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str | None) -> str:
    """A text value in COPY's text format: NULL is \\N; backslash, tab and newlines escaped."""
    if value is None:
        return "\\N"
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_ESCAPES)
    return value


def _number(value: float | None) -> str:
    return "\\N" if value is None else repr(value)


def copy_rows(ids: Sequence[int], jobs: Sequence[NewJob], at: datetime) -> tuple[str, bool]:
    """The COPY text of ``jobs`` under ``ids`` created at ``at`` (statements.COPY_JOBS_PLAIN's
    columns when none uses flow control, else COPY_JOBS's), and whether any is ready at once."""
    ready = False
    stamp = at.isoformat()
    plain = shared.plain(jobs)
    lines = []
    for job_id, j in zip(ids, jobs, strict=True):
        state = shared.state_on_insert(j, j.run_at is None or j.run_at <= at)
        ready = ready or state == "ready"
        fields = [
            str(job_id), copy_text(j.name), copy_text(j.queue), str(int(j.priority)), state,
            copy_text(j.args), copy_text(j.kwargs), str(int(j.max_attempts)),
            "\\N" if j.timeout is None else repr(float(j.timeout)),
            stamp if j.run_at is None else j.run_at.isoformat(), stamp,
        ]
        if not plain:
            fields += (copy_text(j.unique_key), copy_text(j.concurrency_key),
                       _number(j.concurrency_max), copy_text(j.rate_key), _number(j.rate_count),
                       _number(j.rate_period), copy_text(shared.sensitive_text(j)))
        lines.append("\t".join(fields))
    lines.append("")
    return "\n".join(lines), ready
