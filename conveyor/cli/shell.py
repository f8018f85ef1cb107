"""What every ``conveyor`` command shares: the global options, finding the app, the command
group, and one-line errors.

Every user mistake ends as one ``error: ...`` line on stderr with exit code 2 (bad input or
configuration) or 1 (no such job, or the action does not apply to it); never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from .. import __version__
from ..app import Conveyor
from ..errors import ConfigurationError, ConveyorError, DuplicateJob, InvalidState, JobNotFound

BAD_INPUT = 2  # the command line or the configuration is wrong
NOT_APPLICABLE = 1  # no such job, or the action does not apply to it
_STATE_ERRORS = (JobNotFound, InvalidState, DuplicateJob)
F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """A one-line error with its exit code."""

    def __init__(self, message: str, code: int = NOT_APPLICABLE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class State:
    """What the global options chose; the app is built on first use."""

    app_path: str | None = None
    log_format: str | None = None
    _app: Conveyor | None = None

    def app(self, *, create: bool = False) -> Conveyor:
        """The app; unless ``create``, its store must exist already: a command that only looks
        or acts on jobs never leaves a new, empty SQLite file behind."""
        if self._app is None:
            self._app = load_app(self.app_path) if self.app_path is not None else Conveyor()
        if not create:
            missing = self._app.store_missing()
            if missing is not None:
                raise Failure(missing, BAD_INPUT)
        return self._app


def load_app(path: str) -> Conveyor:
    """The Conveyor at ``module:attribute`` (attribute defaults to ``app``), importing the module
    with the current directory on ``sys.path`` like celery and uvicorn do."""
    module_name, _, attr = path.partition(":")
    attr = attr or "app"
    if not module_name.strip() or module_name != module_name.strip():
        raise ConfigurationError(f"--app {path!r}: expected MODULE:ATTRIBUTE, e.g. tasks:app")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigurationError(
                f"--app {path}: no module named {module_name!r} in {cwd} or on sys.path"
            ) from None
        raise ConfigurationError(f"--app {path}: importing {module_name!r} failed: {e}") from None
    except (Exception, SystemExit) as e:
        raise ConfigurationError(
            f"--app {path}: importing {module_name!r} raised {type(e).__name__}: {e}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigurationError(f"--app {path}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, Conveyor):
        raise ConfigurationError(
            f"--app {path}: {attr!r} is of type {type(obj).__name__}, not a Conveyor instance"
        )
    return obj


# --- options every command accepts --------------------------------------------------------
def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name:
        setattr(ctx.find_root().ensure_object(State), param.name, value)
    return value


def _global_options(root: bool, log_format: bool = False) -> Callable[[F], F]:
    """``-A`` and ``--log-format``: shown on the group, also accepted (quietly) after any
    subcommand; the subcommand's value wins."""

    def decorate(f: F) -> F:
        f = click.option(
            "--log-format", "log_format", type=click.Choice(["text", "json"]), default=None,
            expose_value=False, callback=_remember, hidden=not (root or log_format),
            help="Worker log lines as text or JSON (default: the log_format setting).",
        )(f)
        return click.option(
            "-A", "--app", "app_path", metavar="MODULE:ATTR", expose_value=False,
            callback=_remember, envvar="CONVEYOR_APP" if root else None, hidden=not root,
            help="Where your Conveyor instance is (env CONVEYOR_APP). Without it the store "
            "comes from CONVEYOR_DATABASE_URL (default sqlite:///conveyor.db).",
        )(f)

    return decorate


def command(
    group: click.Group, name: str, log_format: bool = False, pass_through: bool = False
) -> Callable[[F], Any]:
    """A subcommand; ``pass_through`` leaves unknown ``-x`` words to the arguments (``-1``)."""
    settings = {"ignore_unknown_options": True} if pass_through else {}

    def decorate(f: F) -> Any:
        options = _global_options(root=False, log_format=log_format)
        return group.command(name, context_settings=settings)(options(f))

    return decorate


def subgroup(group: click.Group, name: str, help: str) -> click.Group:
    def placeholder() -> None:
        pass

    placeholder.__doc__ = help
    return group.group(name)(_global_options(root=False)(placeholder))


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")


def state() -> State:
    return click.get_current_context().find_root().ensure_object(State)


def now() -> datetime:
    return datetime.now(UTC)


# --- the command group ----------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@_global_options(root=True)
@click.version_option(__version__, prog_name="conveyor")
def cli() -> None:
    """conveyor: background jobs for Python.

    \b
    Quick start:
      conveyor -A tasks:app migrate
      conveyor -A tasks:app worker
      conveyor -A tasks:app enqueue tasks:send_email 42
      conveyor -A tasks:app jobs show 1
    """


def check_option(option: str | None, check: Callable[[Any], Any], value: Any) -> None:
    """``check(value)``; its ValueError becomes a one-line error naming the option."""
    try:
        check(value)
    except ValueError as e:
        raise Failure(f"{option}: {e}" if option else str(e), BAD_INPUT) from None


def exit_code(error: ConveyorError) -> int:
    return NOT_APPLICABLE if isinstance(error, _STATE_ERRORS) else BAD_INPUT
