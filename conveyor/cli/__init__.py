"""The ``conveyor`` command: a thin shell over the app's client, ``views`` and ``doctor``.

``shell`` holds what every command shares; ``commands`` (migrate, worker, enqueue, status,
demo), ``jobs`` (jobs and queues), ``doctor`` and ``web`` (dashboard) add theirs to the ``cli``
group; ``output`` draws tables.
"""

from __future__ import annotations

import sys

import click

from ..errors import ConveyorError
from . import commands, cron, doctor, jobs, web
from .output import one_line
from .shell import Failure, State, cli, exit_code, load_app

__all__ = [
    "Failure", "State", "cli", "commands", "cron", "doctor", "exit_code", "jobs", "load_app", "main",
    "web",
]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (used by the console script and ``python -m``)."""
    try:
        rv = cli.main(argv, prog_name="conveyor", standalone_mode=False)
    except click.UsageError as e:
        hint = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
        click.echo(f"error: {one_line(e.format_message())}{hint}", err=True)
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {one_line(e.format_message())}", err=True)
        return e.code if isinstance(e, Failure) else e.exit_code
    except ConveyorError as e:
        click.echo(f"error: {one_line(str(e))}", err=True)
        return exit_code(e)
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return 0
    return rv if isinstance(rv, int) else 0
