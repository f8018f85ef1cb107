"""The commands that run things or write them: migrate, worker, enqueue, status, demo."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from typing import Any, NoReturn

import click

from .. import serialization
from ..errors import ConveyorError, UnknownJob
from ..jobs import RESERVED, AnyJob, JobDefinition, check_priority
from ..queues import QueueSpec, check_queue_name
from ..settings import parse_duration
from ..urls import redact_url
from ..views import limit_view, queue_view, rate_view, worker_view
from . import output as out
from .shell import BAD_INPUT, Failure, check_option, cli, command, json_option, now, state
from .web import serve_metrics


@command(cli, "migrate")
def migrate() -> None:
    """Create or upgrade the schema; prints the version in place."""
    app = state().app(create=True)
    version = app.migrate()
    click.echo(f"schema version {version} at {redact_url(app.url)}")


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
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Serve Prometheus /metrics (every host's jobs, read from the store) on this port.")
@click.option("--metrics-host", default="0.0.0.0", show_default=True, metavar="HOST",
              help="Address for --metrics-port.")
def worker(
    processes: int, concurrency: int, queues: str | None, strict: bool,
    health_port: int | None, health_host: str | None, metrics_port: int | None, metrics_host: str,
) -> NoReturn:
    """Run workers until SIGTERM / SIGINT (creates the schema on an empty store)."""
    from .. import logs

    s = state()
    app = s.app(create=True)
    spec = QueueSpec.parse(queues, strict=strict)
    if health_host is not None and health_port is None:
        raise click.UsageError("--health-host goes with --health-port")
    health: dict[str, Any] = {} if health_port is None else {"health_port": health_port}
    if health_host is not None:
        health["health_host"] = health_host
    servers = [] if metrics_port is None else [serve_metrics(app, metrics_host, metrics_port)]
    logs.configure(s.log_format or app.settings.log_format, app.settings.log_level)
    from ..supervisor import Supervisor

    supervisor = Supervisor(
        app, processes=processes, concurrency=concurrency, queues=spec, servers=servers, **health
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
        check_option(None, check_priority, priority)
    if queue is not None:
        check_option("--queue", check_queue_name, queue)
    definition = _find_job(name)
    missing = definition.client.store_missing()
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
        now() + timedelta(seconds=seconds)
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
    at = now()
    queues = [queue_view(q, at) for q in app.client.queues()]
    workers = [worker_view(p, at, app.settings.rescue_after) for p in app.client.workers()]
    limits = [limit_view(u) for u in app.client.limits()]
    rates = [rate_view(r) for r in app.client.rates()]
    if as_json:
        out.print_json({"queues": queues, "workers": workers, "limits": limits, "rates": rates})
        return
    con = out.console()
    out.render_queues(queues, con)
    out.render_limits(limits, con)
    out.render_rates(rates, con)
    out.render_workers(workers, con)


# --- demo ---------------------------------------------------------------------------------
@command(cli, "demo")
@click.option("--duration", type=click.FloatRange(min=1), default=45.0, show_default=True,
              help="Seconds to wait for the example jobs before the summary.")
@click.option("--keep-running", is_flag=True,
              help="After the summary keep the worker running (and reporting) until Ctrl-C.")
def demo(duration: float, keep_running: bool) -> NoReturn:
    """Run a worker and example jobs on a local SQLite file and narrate what happens."""
    from .. import demo as demo_module

    s = state()
    url = (s.app(create=True).url if s.app_path is not None
           else os.environ.get("CONVEYOR_DATABASE_URL"))
    code = demo_module.run(url, duration=duration, keep_running=keep_running)
    click.get_current_context().exit(code)
