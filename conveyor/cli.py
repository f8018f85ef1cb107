"""The ``conveyor`` command: a thin shell over the app, its client and its store.

Every user mistake ends as one ``error: ...`` line on stderr with exit code 2 (bad input or
configuration) or 1 (no such job, or the action does not apply to it); never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click

from . import __version__, serialization
from . import cli_output as out
from .app import Conveyor
from .errors import (
    ConfigurationError,
    ConveyorError,
    DuplicateJob,
    InvalidState,
    JobNotFound,
    UnknownJob,
)
from .jobs import RESERVED, AnyJob, JobDefinition, check_priority
from .models import JobState
from .queues import QueueSpec, check_queue_name
from .settings import parse_duration

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
            f"--app {path}: {attr!r} is a {type(obj).__name__}, not a Conveyor instance"
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


def _now() -> datetime:
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


@command(cli, "migrate")
def migrate() -> None:
    """Create or upgrade the schema; prints the version in place."""
    app = state().app(create=True)
    version = app.migrate()
    click.echo(f"schema version {version} at {out.safe_url(app.url)}")


@command(cli, "worker", log_format=True)
@click.option("--processes", "-p", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes to fork.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=10, show_default=True,
              help="Jobs each process runs at once.")
@click.option("--queues", "-Q", "queues", default=None, metavar="SPEC",
              help="Queues with weights (critical:3,default:1) or an order with --strict.")
@click.option("--strict", is_flag=True, help="Take queues strictly in the order given.")
@click.option("--health-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Serve /livez and /readyz on this port.")
@click.option("--health-host", default=None, metavar="HOST",
              help="Address for --health-port (default: all interfaces).")
def worker(
    processes: int, concurrency: int, queues: str | None, strict: bool,
    health_port: int | None, health_host: str | None,
) -> NoReturn:
    """Run workers until SIGTERM / SIGINT (creates the schema on an empty store)."""
    from . import logs

    s = state()
    app = s.app(create=True)
    spec = QueueSpec.parse(queues, strict=strict)
    if health_host is not None and health_port is None:
        raise click.UsageError("--health-host goes with --health-port")
    health: dict[str, Any] = {} if health_port is None else {"health_port": health_port}
    if health_host is not None:
        health["health_host"] = health_host
    logs.configure(s.log_format or app.settings.log_format, app.settings.log_level)
    from .supervisor import Supervisor

    supervisor = Supervisor(
        app, processes=processes, concurrency=concurrency, queues=spec, **health
    )
    click.get_current_context().exit(supervisor.run())


@command(cli, "enqueue", pass_through=True)
@click.argument("name")
@click.argument("args", nargs=-1)
@click.option("--kwargs", "kwargs_json", metavar="JSON_OBJECT", help="Keyword arguments.")
@click.option("--queue", "-q", help="Queue (overrides the job's own).")
@click.option("--priority", type=int, help="Higher runs first within a queue.")
@click.option("--in", "delay", metavar="DURATION", help="Run after a delay: 30s, 10m, 2h, 1d.")
@click.option("--at", "at", metavar="ISO_DATETIME", help="Run at a time (naive = local time).")
@json_option
def enqueue(
    name: str, args: tuple[str, ...], kwargs_json: str | None, queue: str | None,
    priority: int | None, delay: str | None, at: str | None, as_json: bool,
) -> None:
    """Enqueue job NAME (module:function) with JSON arguments: enqueue tasks:add 1 2."""
    if delay is not None and at is not None:
        raise click.UsageError("--in and --at cannot be used together")
    values = [_json_arg(f"argument {i}", text) for i, text in enumerate(args, 1)]
    kwargs = {} if kwargs_json is None else _json_arg("--kwargs", kwargs_json)
    if not isinstance(kwargs, dict):
        raise Failure("--kwargs must be a JSON object, e.g. '{\"user_id\": 42}'", BAD_INPUT)
    if set(kwargs) & set(RESERVED):
        raise Failure(f"--kwargs: {', '.join(RESERVED)} is reserved by conveyor", BAD_INPUT)
    seconds = None if delay is None else _parse_delay(delay)
    when = None if at is None else _parse_when(at)
    if priority is not None:
        _check_option(None, check_priority, priority)
    if queue is not None:
        _check_option("--queue", check_queue_name, queue)
    definition = _find_job(name)
    missing = definition.client.store.missing()
    if missing is not None:
        raise Failure(missing, BAD_INPUT)
    try:
        bound = definition.options(queue=queue, priority=priority)
        if seconds is not None:
            handle = bound.enqueue_in(seconds, *values, **kwargs)
        elif when is not None:
            handle = bound.enqueue_at(when, *values, **kwargs)
        else:
            handle = bound.enqueue(*values, **kwargs)
    except ConveyorError:
        raise
    except (TypeError, ValueError) as e:
        raise Failure(str(e), BAD_INPUT) from None
    if as_json:
        out.print_json({"id": handle.id, "state": str(handle.status())})
    else:
        click.echo(handle.id)


def _check_option(option: str | None, check: Callable[[Any], Any], value: Any) -> None:
    """``check(value)``; its ValueError becomes a one-line error naming the option."""
    try:
        check(value)
    except ValueError as e:
        raise Failure(f"{option}: {e}" if option else str(e), BAD_INPUT) from None


def _json_arg(label: str, text: str) -> Any:
    try:
        return serialization.loads(text)
    except RecursionError:
        raise Failure(
            f"{label} is nested too deeply (arguments may nest {serialization.MAX_DEPTH} levels)",
            BAD_INPUT,
        ) from None
    except (ValueError, TypeError, AttributeError) as e:
        if text.startswith("-"):
            raise click.UsageError(f"no such option: {text}") from None
        reason = getattr(e, "msg", None) or str(e)
        hint = f"; quote text as JSON, e.g. '\"{text}\"'" if text[:1] not in '[{"' else ""
        raise Failure(f"{label} {text!r} is not valid JSON ({reason}){hint}", BAD_INPUT) from None


def _parse_delay(text: str) -> float:
    seconds = parse_duration(text, "--in")
    try:
        _now() + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        raise Failure(f"--in {text!r} is too far in the future (past the year 9999)",
                      BAD_INPUT) from None
    return seconds


def _parse_when(text: str) -> datetime:
    """An aware datetime; naive text is local time. A time already past runs the job now."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise Failure(
            f"--at {text!r} is not an ISO date-time, e.g. 2030-01-31T09:00:00+00:00", BAD_INPUT
        ) from None
    try:
        return when if when.tzinfo else when.astimezone()
    except (ValueError, OverflowError):
        raise Failure(f"--at {text!r} is out of range as a local time; give its UTC offset,"
                      " e.g. +00:00", BAD_INPUT) from None


def _find_job(name: str) -> AnyJob:
    s = state()
    app = s.app(create=True)  # only its registry: the job found may belong to another app
    try:
        return app.registry.resolve(name)
    except UnknownJob as e:
        if s.app_path is None:  # no -A: the job may be registered with its own module's app
            found = _definition_at(name)
            if found is not None:
                return found
        known = app.registry.names()
        hint = (f"; known jobs: {', '.join(known)}" if known
                else "; pass -A MODULE:APP so conveyor can find your jobs" if s.app_path is None
                else "")
        raise Failure(f"{e}{hint}", BAD_INPUT) from None


def _definition_at(name: str) -> AnyJob | None:
    module_name, _, attr = name.partition(":")
    module = sys.modules.get(module_name)
    found = getattr(module, attr, None) if module is not None and attr else None
    return found if isinstance(found, JobDefinition) else None


@command(cli, "status")
@json_option
def status(as_json: bool) -> None:
    """Queues (counts, latency) and the workers serving them."""
    app = state().app()
    now = _now()
    queues = [out.queue_row(q, now) for q in app.store.queue_stats()]
    workers = [out.worker_row(p, now, app.settings.rescue_after) for p in app.store.process_list()]
    if as_json:
        out.print_json({"queues": queues, "workers": workers})
        return
    con = out.console()
    out.render_queues(queues, con)
    out.render_workers(workers, con)


@command(cli, "doctor")
@json_option
@click.option("--watch", is_flag=True, help="Diagnose every few seconds; print changes.")
def doctor(as_json: bool, watch: bool) -> NoReturn:
    """Diagnose the store and workers; exit 0 healthy, 1 warnings, 2 problems."""
    from .doctor import main_command

    s = state()
    app = s.app(create=True)  # opens nothing: a missing store is one of its findings
    code = main_command(app, s.app_path, as_json=as_json, watch=watch, console=out.console())
    click.get_current_context().exit(code)


# --- jobs ---------------------------------------------------------------------------------
class JobId(click.ParamType[int]):
    """A job id: a whole number that fits the stores' 64-bit id column."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            job_id = value
        else:
            try:
                job_id = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a job id (a whole number)", param, ctx)
        if not -(2**63) <= job_id < 2**63:
            self.fail(f"{value} is not a job id (ids are at most {2**63 - 1})", param, ctx)
        return job_id


JOB_ID = JobId()
jobs_group = subgroup(cli, "jobs", "Inspect jobs and act on them.")
STATES = click.Choice([str(s) for s in JobState])


@command(jobs_group, "list")
@click.option("--state", "state_", type=STATES, help="Only jobs in this state.")
@click.option("--queue", "-q", help="Only jobs of this queue.")
@click.option("--name", "-n", help="Only jobs of this name (module:function).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@json_option
def jobs_list(
    state_: str | None, queue: str | None, name: str | None, limit: int, as_json: bool
) -> None:
    """Jobs, newest first."""
    found = state().app().jobs.list(state=state_, queue=queue, name=name, limit=limit)
    if as_json:
        out.print_json([out.job_dict(j) for j in found])
    else:
        out.render_jobs(found, _now(), out.console())


@command(jobs_group, "show")
@click.argument("job_id", type=JOB_ID)
@json_option
def jobs_show(job_id: int, as_json: bool) -> None:
    """Everything about a job: arguments, result, progress, logs, every attempt's traceback."""
    app = state().app()
    job = app.jobs.get(job_id)
    detail = out.job_detail(job, app.store.job_attempts(job_id), app.store.job_logs(job_id))
    if as_json:
        out.print_json(detail)
    else:
        out.render_job(detail, job, _now(), out.console())


def _bulk_options(f: F) -> F:
    f = click.option("--queue", "-q", help="With --all-dead: only this queue.")(f)
    f = click.option("--all-dead", is_flag=True, help="Every dead job.")(f)
    return click.argument("job_ids", nargs=-1, type=JOB_ID)(f)


def _bulk(
    verb: str, job_ids: tuple[int, ...], all_dead: bool, queue: str | None,
    act: Callable[[list[int]], int], act_all: Callable[[str | None], int],
    applies: Callable[[JobState], bool], rule: str,
) -> None:
    if all_dead == bool(job_ids):
        raise click.UsageError(f"give job ids or --all-dead, not {'both' if all_dead else 'neither'}")
    if queue is not None and not all_dead:
        raise click.UsageError("--queue goes with --all-dead")
    if queue is not None:
        _check_option("--queue", check_queue_name, queue)
    if all_dead:
        click.echo(f"{verb} {act_all(queue)} dead job(s)")
        return
    app = state().app()
    before = {i: app.jobs.get(i).state for i in dict.fromkeys(job_ids)}  # JobNotFound → exit 1
    done = act(list(before))
    skipped = [f"{i} ({s})" for i, s in before.items() if not applies(s)]
    if done:
        click.echo(f"{verb} {done} job(s)")
    if done < len(before):
        listed = ", ".join(skipped) or "some changed state meanwhile"
        raise Failure(f"not {verb}: {listed}; {rule}")


_RETRYABLE = (JobState.DEAD, JobState.CANCELLED, JobState.FAILED)


@command(jobs_group, "retry")
@_bulk_options
def jobs_retry(job_ids: tuple[int, ...], all_dead: bool, queue: str | None) -> None:
    """Run dead, cancelled or failed jobs again now (ids, or --all-dead)."""
    jobs = state().app().jobs
    _bulk("retried", job_ids, all_dead, queue, jobs.retry,
          lambda q: jobs.retry_all(JobState.DEAD, queue=q), lambda s: s in _RETRYABLE,
          "only dead, cancelled or failed jobs can be retried")


@command(jobs_group, "discard")
@_bulk_options
def jobs_discard(job_ids: tuple[int, ...], all_dead: bool, queue: str | None) -> None:
    """Delete jobs that are not running, with their attempts and logs (ids, or --all-dead)."""
    jobs = state().app().jobs
    _bulk("discarded", job_ids, all_dead, queue, jobs.discard,
          lambda q: jobs.discard_all(JobState.DEAD, queue=q),
          lambda s: s is not JobState.RUNNING, "a running job cannot be discarded; cancel it")


@command(jobs_group, "cancel")
@click.argument("job_id", type=JOB_ID)
def jobs_cancel(job_id: int) -> None:
    """Cancel a waiting job now; ask a running one to stop."""
    after = state().app().jobs.cancel(job_id)
    if after is JobState.CANCELLED:
        click.echo(f"job {job_id} cancelled")
    elif after is JobState.RUNNING:
        click.echo(f"job {job_id} is running: cancellation requested (it sees cancel_requested)")
    else:
        raise Failure(f"job {job_id} already {after}; nothing to cancel")


# --- queues -------------------------------------------------------------------------------
queues_group = subgroup(cli, "queues", "List, pause and resume queues.")


@command(queues_group, "list")
@json_option
def queues_list(as_json: bool) -> None:
    """Queues with their counts and latency."""
    now = _now()
    rows = [out.queue_row(q, now) for q in state().app().store.queue_stats()]
    if as_json:
        out.print_json(rows)
    else:
        out.render_queues(rows, out.console())


@command(queues_group, "pause")
@click.argument("name")
def queues_pause(name: str) -> None:
    """Stop starting jobs from a queue (it still accepts new ones). A queue with no jobs yet
    can be paused too, e.g. before deploying the code that uses it."""
    _check_option(None, check_queue_name, name)
    app = state().app()
    known = _queue_in_use(app, name)
    app.pause_queue(name)
    click.echo(f"queue {name} paused: jobs are kept, none start until: conveyor queues resume {name}")
    if not known:
        click.echo(f"note: no job and no worker uses queue {name!r} yet; it is paused all the same"
                   " (check the spelling if you meant an existing one)", err=True)


def _queue_in_use(app: Conveyor, name: str) -> bool:
    """Whether queue ``name`` has jobs (or a pause record) or a registered worker listens to it."""
    if any(q.queue == name for q in app.store.queue_stats()):
        return True
    return any(name in p.queues for p in app.store.process_list())


@command(queues_group, "resume")
@click.argument("name")
def queues_resume(name: str) -> None:
    """Start jobs from a paused queue again."""
    _check_option(None, check_queue_name, name)
    state().app().resume_queue(name)
    click.echo(f"queue {name} resumed")


# --- demo ---------------------------------------------------------------------------------
@command(cli, "demo")
@click.option("--duration", type=click.FloatRange(min=1), default=45.0, show_default=True,
              help="Seconds to wait for the example jobs before the summary.")
@click.option("--keep-running", is_flag=True,
              help="After the summary keep the worker running (and reporting) until Ctrl-C.")
def demo(duration: float, keep_running: bool) -> NoReturn:
    """Run a worker and example jobs on a local SQLite file and narrate what happens."""
    from . import demo as demo_module

    s = state()
    url = (s.app(create=True).url if s.app_path is not None
           else os.environ.get("CONVEYOR_DATABASE_URL"))
    code = demo_module.run(url, duration=duration, keep_running=keep_running)
    click.get_current_context().exit(code)


# --- entry point ----------------------------------------------------------------------------
def exit_code(error: ConveyorError) -> int:
    return NOT_APPLICABLE if isinstance(error, _STATE_ERRORS) else BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (used by the console script and ``python -m``)."""
    try:
        rv = cli.main(argv, prog_name="conveyor", standalone_mode=False)
    except click.UsageError as e:
        hint = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
        click.echo(f"error: {out.one_line(e.format_message())}{hint}", err=True)
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {out.one_line(e.format_message())}", err=True)
        return e.code if isinstance(e, Failure) else e.exit_code
    except ConveyorError as e:
        click.echo(f"error: {out.one_line(str(e))}", err=True)
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
