"""How the CLI shows things to people: rich tables drawn from ``conveyor.views``.

Nothing here reads the store; callers pass views (and records) in. ``--json`` prints the same
views the tables are drawn from, so both always agree.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..models import JobRecord
from ..views import QUEUE_STATES

if TYPE_CHECKING:  # rich is imported by the commands that print tables, not by `worker`
    from rich.console import Console
    from rich.text import Text

STATE_STYLE = {
    "succeeded": "green", "dead": "bold red", "failed": "yellow", "running": "cyan",
    "cancelled": "magenta", "scheduled": "blue", "blocked": "yellow", "ready": "",
}
OUTCOME_STYLE = {"succeeded": "green", "error": "red"}


def console() -> Console:
    """stdout, 120 columns when not a terminal so piped tables stay readable."""
    from rich.console import Console

    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
    return Console(width=wide, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


# --- plain values ---------------------------------------------------------------------------
def one_line(text: object) -> str:
    return " ".join(str(text).split())


def age(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m 04s``, ``2h 05m``, ``3d 4h``."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d {int(s % 86400 // 3600)}h"


def stamp(when: datetime | None, now: datetime) -> str:
    """An absolute UTC time with how long ago (or from now) it is."""
    if when is None:
        return "-"
    delta = (now - when).total_seconds()
    relative = f"{age(delta)} ago" if delta >= 0 else f"in {age(-delta)}"
    return f"{when:%Y-%m-%d %H:%M:%S} UTC ({relative})"


# --- tables ---------------------------------------------------------------------------------
def _state(state: str) -> Text:
    from rich.text import Text

    return Text(state, style=STATE_STYLE.get(state, ""))


def render_queues(rows: Sequence[dict[str, Any]], out: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    if not rows:
        out.print("No queue has jobs waiting, running or dead.")
        return
    table = Table(title="Queues", title_justify="left")
    table.add_column("queue")
    table.add_column("status")
    for s in QUEUE_STATES:
        table.add_column(str(s), justify="right")
    table.add_column("latency", justify="right")
    for r in rows:
        status = Text("paused", style="bold yellow") if r["paused"] else Text("active")
        counts = [Text(str(r[str(s)]), style=STATE_STYLE[s] if r[str(s)] else "dim")
                  for s in QUEUE_STATES]
        table.add_row(Text(r["queue"]), status, *counts, age(r["latency_seconds"]))
    out.print(table)


def render_workers(rows: Sequence[dict[str, Any]], out: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    if not rows:
        out.print("No workers are running. Start one with: conveyor -A MODULE:APP worker")
        return
    table = Table(title="Workers", title_justify="left")
    for name in ("kind", "host", "pid", "queues", "concurrency", "heartbeat"):
        table.add_column(name, justify="right" if name in ("pid", "concurrency") else "left")
    for r in rows:
        beat = Text(f"{age(r['heartbeat_age_seconds'])} ago")
        if r["stale"]:
            beat = Text(f"{age(r['heartbeat_age_seconds'])} ago (stale)", style="bold red")
        table.add_row(
            r["kind"], Text(r["host"]), str(r["pid"]), Text(",".join(r["queues"]) or "-"),
            str(r["concurrency"] or "-"), beat,
        )
    out.print(table)


def render_jobs(jobs: Sequence[JobRecord], now: datetime, out: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    if not jobs:
        out.print("No jobs match.")
        return
    table = Table()
    for name in ("id", "name", "queue", "state", "attempt", "created", "run at / finished", "error"):
        table.add_column(name, justify="right" if name == "id" else "left",
                         overflow="ellipsis" if name == "error" else "fold")
    for j in jobs:
        moment = j.finished_at if j.state.finished else j.run_at
        rel = (now - moment).total_seconds() if moment else None
        when = "-" if rel is None else (f"{age(rel)} ago" if rel >= 0 else f"in {age(-rel)}")
        table.add_row(
            str(j.id), Text(j.name), Text(j.queue), _state(str(j.state)),
            f"{j.attempt}/{j.max_attempts}", f"{age((now - j.created_at).total_seconds())} ago",
            when, Text((j.error or "").splitlines()[0] if j.error else "", style="red"),
        )
    out.print(table)


def render_job(detail: dict[str, Any], job: JobRecord, now: datetime, out: Console) -> None:
    """One job, every attempt with its traceback, and its logs: what a person debugs from."""
    from rich.table import Table
    from rich.text import Text

    out.print(Text.assemble(("job ", "bold"), (str(job.id), "bold"), "  ", (job.name, "bold"),
                            "  ", _state(str(job.state))))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("queue", f"{job.queue} (priority {job.priority})"),
        ("attempts", f"{job.attempt} of {job.max_attempts}"),
        ("args", _compact(detail["args"])), ("kwargs", _compact(detail["kwargs"])),
        ("created", stamp(job.created_at, now)), ("run at", stamp(job.run_at, now)),
        ("started", stamp(job.started_at, now)), ("finished", stamp(job.finished_at, now)),
        ("timeout", "-" if job.timeout is None else f"{job.timeout:g}s"),
    ]
    if job.worker_id:
        rows.append(("worker", job.worker_id))
    if job.heartbeat_at:
        rows.append(("heartbeat", stamp(job.heartbeat_at, now)))
    if job.progress is not None or job.progress_message:
        pct = "" if job.progress is None else f"{job.progress:g}%"
        rows.append(("progress", " ".join(x for x in (pct, job.progress_message or "") if x)))
    if job.cancel_requested:
        rows.append(("cancel", "requested"))
    rows += _flow_rows(job, detail.get("waiting_for"))
    if job.result is not None:
        rows.append(("result", job.result))
    if job.error:
        rows.append(("error", job.error))
    for label, value in rows:
        grid.add_row(label, Text(value))
    out.print(grid)
    _render_attempts(detail["attempts"], out)
    if detail["logs"]:
        out.print(Text("\nlogs", style="bold"))
        for entry in detail["logs"]:
            out.print(Text(f"  [attempt {entry['attempt']}] {entry['at']}  {entry['message']}"))


def _flow_rows(job: JobRecord, reason: str | None) -> list[tuple[str, str]]:
    rows = []
    if job.unique_key:
        rows.append(("unique key", job.unique_key))
    if job.concurrency_key:
        rows.append(("limit", f"{job.concurrency_key} (max {job.concurrency_max or 1})"))
    if job.rate_key:
        rows.append(("rate", f"{job.rate_key} ({job.rate_count} per {job.rate_period or 1:g}s)"))
    if reason:
        rows.append(("waiting for", reason))
    return rows


def render_limits(rows: Sequence[dict[str, Any]], out: Console) -> None:
    """Concurrency keys with jobs blocked behind them (a key whose jobs all run is not news)."""
    from rich.table import Table

    waiting = [r for r in rows if r["blocked"]]
    if not waiting:
        return
    table = Table(title="Blocked by concurrency limits", title_justify="left")
    for name in ("key", "holding", "blocked"):
        table.add_column(name, justify="left" if name == "key" else "right")
    for r in waiting:
        table.add_row(r["key"], f"{r['running_or_ready']}/{r['max']}", str(r["blocked"]))
    out.print(table)


def render_rates(rows: Sequence[dict[str, Any]], out: Console) -> None:
    """Rate keys with jobs waiting for room in their window."""
    from rich.table import Table

    if not rows:
        return
    table = Table(title="Waiting on rate limits", title_justify="left")
    for name in ("key", "rate", "waiting", "enqueued_last_minute"):
        table.add_column(name.replace("_", " "), justify="left" if name == "key" else "right")
    for r in rows:
        table.add_row(r["key"], r["rate"], str(r["waiting"]), str(r["enqueued_last_minute"]))
    out.print(table)


def _render_attempts(attempts: Sequence[dict[str, Any]], out: Console) -> None:
    from rich.text import Text

    out.print(Text(f"\nattempts ({len(attempts)})", style="bold"))
    if not attempts:
        out.print("  none yet")
    for a in attempts:
        took = "" if a["duration_seconds"] is None else f" ({age(a['duration_seconds'])})"
        style = OUTCOME_STYLE.get(a["outcome"], "yellow")
        out.print(Text.assemble(
            f"  #{a['attempt']}  ", (a["outcome"], style), f"  started {a['started_at']}{took}",
            f"  on {a['worker_id']}" if a["worker_id"] else "",
        ))
        if a["error_class"]:
            message = f"{a['error_class']}: {a['error_message']}" if a["error_message"] else \
                a["error_class"]
            out.print(Text(f"      {message}", style="red"))
        if a["traceback"]:
            # plain text, never wrapped or re-styled: it is what the user will search for
            out.print(Text(_indent(a["traceback"].rstrip("\n"), "      ")), soft_wrap=True)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _compact(value: Any) -> str:
    """A shown value as JSON text, spaced as conveyor stores it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
