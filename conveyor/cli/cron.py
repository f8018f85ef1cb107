"""``conveyor cron list / pause / resume / run / history``: recurring schedules, through the
app's ``schedules`` (the same calls the dashboard makes). With ``-A`` the app's code says which
schedules exist; without it, what the store keeps is shown."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..views import schedule_view, tick_view
from . import output as out
from .shell import cli, command, json_option, now, state, subgroup

if TYPE_CHECKING:
    from rich.console import Console

STATUS_STYLE = {"active": "", "paused": "bold yellow", "orphaned": "bold red",
                "fired": "green", "skipped": "yellow", "missed": "red"}
cron_group = subgroup(cli, "cron", "Recurring schedules: list, pause, resume, run now, history.")


@command(cron_group, "list")
@json_option
def cron_list(as_json: bool) -> None:
    """Each schedule: its state, last run and outcome, next run."""
    rows = [schedule_view(s) for s in state().app().schedules.list()]
    if as_json:
        out.print_json(rows)
    else:
        _render_schedules(rows, now(), out.console())


@command(cron_group, "pause")
@click.argument("name")
def cron_pause(name: str) -> None:
    """Stop firing NAME; its ticks are recorded as skipped until resumed."""
    state().app().schedules.pause(name)
    click.echo(f"schedule {name} paused")


@command(cron_group, "resume")
@click.argument("name")
def cron_resume(name: str) -> None:
    """Fire NAME again from its next tick."""
    state().app().schedules.resume(name)
    click.echo(f"schedule {name} resumed")


@command(cron_group, "run")
@click.argument("name")
@json_option
def cron_run(name: str, as_json: bool) -> None:
    """Enqueue NAME's job now, outside the schedule (paused or not)."""
    handle = state().app().schedules.run(name)
    if as_json:
        out.print_json({"schedule": name, "job_id": handle.id})
    else:
        click.echo(f"enqueued job {handle.id} for schedule {name}")


@command(cron_group, "history")
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Ticks to show, newest first.")
@json_option
def cron_history(name: str, limit: int, as_json: bool) -> None:
    """Every tick of NAME: fired, skipped or missed, with its job and outcome."""
    rows = [tick_view(t) for t in state().app().schedules.history(name, limit=limit)]
    if as_json:
        out.print_json(rows)
    else:
        _render_ticks(name, rows, out.console())


def _when(value: str | None, at: datetime) -> str:
    return "-" if value is None else out.stamp(datetime.fromisoformat(value), at)


def _render_schedules(rows: Sequence[dict[str, Any]], at: datetime, console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    if not rows:
        console.print("No recurring schedules. Define one with @app.cron(...).")
        return
    table = Table(title="Recurring schedules", title_justify="left")
    for column in ("name", "schedule", "state", "last run", "outcome", "next run", "job"):
        table.add_column(column)
    for r in rows:
        when = r["schedule"] if r["timezone"] == "UTC" else f"{r['schedule']} ({r['timezone']})"
        table.add_row(
            Text(r["name"]), Text(when), Text(r["state"], style=STATUS_STYLE[r["state"]]),
            _when(r["last_run_at"], at), Text(r["last_outcome"] or "-",
                                              style=out.STATE_STYLE.get(r["last_outcome"] or "", "")),
            _when(r["next_run_at"], at), Text(r["job"]),
        )
    console.print(table)


def _render_ticks(name: str, rows: Sequence[dict[str, Any]], console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    if not rows:
        console.print(f"Schedule {name} has no ticks recorded yet.")
        return
    table = Table(title=f"History of {name} (newest first)", title_justify="left")
    for column in ("fire at (UTC)", "tick", "job", "outcome", "why"):
        table.add_column(column)
    for r in rows:
        fire = datetime.fromisoformat(r["fire_at"]).strftime("%Y-%m-%d %H:%M:%S")
        status = r["status"] + (" (run now)" if r["manual"] else "")
        table.add_row(fire, Text(status, style=STATUS_STYLE.get(r["status"], "")),
                      "-" if r["job_id"] is None else str(r["job_id"]),
                      Text(r["outcome"] or "-", style=out.STATE_STYLE.get(r["outcome"] or "", "")),
                      Text(r["reason"] or ""))
    console.print(table)
