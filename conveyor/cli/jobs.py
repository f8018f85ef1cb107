"""``conveyor jobs ...`` and ``conveyor queues ...``: inspect jobs and queues and act on them,
through the app's client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..app import Conveyor
from ..models import JobState
from ..queues import check_queue_name
from ..views import job_detail_view, job_view, queue_view, waiting_for
from . import output as out
from .shell import Failure, check_option, cli, command, json_option, now, state, subgroup

F = TypeVar("F", bound=Callable[..., Any])


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
    found = state().app().client.list(state=state_, queue=queue, name=name, limit=limit)
    if as_json:
        out.print_json([job_view(j) for j in found])
    else:
        out.render_jobs(found, now(), out.console())


@command(jobs_group, "show")
@click.argument("job_id", type=JOB_ID)
@json_option
def jobs_show(job_id: int, as_json: bool) -> None:
    """Everything about a job: arguments, result, progress, logs, every attempt's traceback."""
    client = state().app().client
    job = client.get(job_id)
    detail = job_detail_view(job, client.attempts(job_id), client.logs(job_id))
    detail["waiting_for"] = waiting_for(job, client.limits() if job.concurrency_key else [])
    if as_json:
        out.print_json(detail)
    else:
        out.render_job(detail, job, now(), out.console())


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
        check_option("--queue", check_queue_name, queue)
    if all_dead:
        click.echo(f"{verb} {act_all(queue)} dead job(s)")
        return
    client = state().app().client
    before = {i: client.get(i).state for i in dict.fromkeys(job_ids)}  # JobNotFound → exit 1
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
    client = state().app().client
    _bulk("retried", job_ids, all_dead, queue, client.retry,
          lambda q: client.retry_all(JobState.DEAD, queue=q), lambda s: s in _RETRYABLE,
          "only dead, cancelled or failed jobs can be retried")


@command(jobs_group, "discard")
@_bulk_options
def jobs_discard(job_ids: tuple[int, ...], all_dead: bool, queue: str | None) -> None:
    """Delete jobs that are not running, with their attempts and logs (ids, or --all-dead)."""
    client = state().app().client
    _bulk("discarded", job_ids, all_dead, queue, client.discard,
          lambda q: client.discard_all(JobState.DEAD, queue=q),
          lambda s: s is not JobState.RUNNING, "a running job cannot be discarded; cancel it")


@command(jobs_group, "cancel")
@click.argument("job_id", type=JOB_ID)
def jobs_cancel(job_id: int) -> None:
    """Cancel a waiting job now; ask a running one to stop."""
    after = state().app().client.cancel(job_id)
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
    at = now()
    rows = [queue_view(q, at) for q in state().app().client.queues()]
    if as_json:
        out.print_json(rows)
    else:
        out.render_queues(rows, out.console())


@command(queues_group, "pause")
@click.argument("name")
def queues_pause(name: str) -> None:
    """Stop starting jobs from a queue (it still accepts new ones). A queue with no jobs yet
    can be paused too, e.g. before deploying the code that uses it."""
    check_option(None, check_queue_name, name)
    app = state().app()
    known = _queue_in_use(app, name)
    app.client.pause(name)
    click.echo(f"queue {name} paused: jobs are kept, none start until: conveyor queues resume {name}")
    if not known:
        click.echo(f"note: no job and no worker uses queue {name!r} yet; it is paused all the same"
                   " (check the spelling if you meant an existing one)", err=True)


def _queue_in_use(app: Conveyor, name: str) -> bool:
    """Whether queue ``name`` has jobs (or a pause record) or a registered worker listens to it."""
    if any(q.queue == name for q in app.client.queues()):
        return True
    return any(name in p.queues for p in app.client.workers())


@command(queues_group, "resume")
@click.argument("name")
def queues_resume(name: str) -> None:
    """Start jobs from a paused queue again."""
    check_option(None, check_queue_name, name)
    state().app().client.resume(name)
    click.echo(f"queue {name} resumed")
