"""``conveyor doctor``: diagnose once, or ``--watch``; print findings as text or JSON.

The diagnoses are ``conveyor.doctor``'s; this module only renders reports and owns the loop.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

import click

from ..doctor import Report, diagnose
from . import output as out
from .shell import cli, command, json_option, state

if TYPE_CHECKING:
    from rich.console import Console

    from ..app import Conveyor


@command(cli, "doctor")
@json_option
@click.option("--watch", "watching", is_flag=True,
              help="Diagnose every few seconds; print changes.")
def doctor(as_json: bool, watching: bool) -> NoReturn:
    """Diagnose the store and workers; exit 0 healthy, 1 warnings, 2 problems."""
    s = state()
    app = s.app(create=True)  # opens nothing: a missing store is one of its findings
    code = main_command(app, s.app_path, as_json=as_json, watching=watching,
                        console=out.console())
    click.get_current_context().exit(code)


def main_command(
    app: Conveyor, app_path: str | None, as_json: bool = False, watching: bool = False,
    *, console: Console | None = None,
) -> int:
    """``conveyor doctor [--json] [--watch]``: print the report, return its exit code."""
    console = console or _console()
    if watching:
        return watch(app, app_path=app_path, as_json=as_json, console=console)
    report = diagnose(app, app_path=app_path)
    _print(report, console, as_json)
    return report.exit_code


def watch(
    app: Conveyor, *, app_path: str | None = None, interval: float = 5.0, as_json: bool = False,
    console: Console | None = None, rounds: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Diagnose every ``interval`` seconds, printing only when the findings change, until
    Ctrl-C (or ``rounds`` diagnoses); returns the last exit code."""
    console = console or _console()
    last: tuple[tuple[str, str], ...] | None = None
    code, done = 0, 0
    try:
        while rounds is None or done < rounds:
            report = diagnose(app, app_path=app_path)
            code, done = report.exit_code, done + 1
            if report.key() != last:
                last = report.key()
                _print(report, console, as_json, compact=True)
            if rounds is None or done < rounds:
                sleep(interval)
    except KeyboardInterrupt:
        pass
    return code


def render(report: Report, console: Console) -> None:
    """Findings for people: severity, title, evidence, and the fix."""
    from rich.text import Text

    if not report.findings:
        console.print(Text.assemble(("healthy", "bold green"), f"  {report.summary}"))
        return
    problems = sum(f.severity == "problem" for f in report.findings)
    warnings = len(report.findings) - problems
    console.print(Text(f"conveyor doctor: {problems} problem(s), {warnings} warning(s)"
                       f"  [{report.store}]  {report.summary}".rstrip(), style="bold"))
    for f in report.findings:
        style = "bold red" if f.severity == "problem" else "bold yellow"
        console.print()
        console.print(Text.assemble((f.severity.upper(), style), f"  {f.title}  ",
                                    (f"[{f.code}]", "dim")))
        for line in f.evidence:
            console.print(Text(f"    - {line}"))
        console.print(Text.assemble(("    fix: ", "bold"), f.fix))


def render_text(report: Report, width: int = 100) -> str:
    """The report as plain text, without colours."""
    from rich.console import Console

    buffer = io.StringIO()
    render(report, Console(file=buffer, width=width, color_system=None, highlight=False,
                           soft_wrap=True))
    return buffer.getvalue()


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def _print(report: Report, console: Console, as_json: bool, compact: bool = False) -> None:
    if as_json:  # one object per line while watching
        text = json.dumps(report.to_dict(), indent=None if compact else 2, ensure_ascii=False)
        print(text, file=console.file, flush=True)
        return
    if compact:
        from rich.text import Text

        console.rule(Text(report.checked_at or time.strftime("%Y-%m-%dT%H:%M:%S")))
    render(report, console)
