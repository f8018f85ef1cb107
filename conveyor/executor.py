"""Run ONE claimed job: resolve it, call it, and turn how it ended into a ``JobOutcome``.

The caller (worker or ``testing.drain``) writes the outcome to the store, and fires the job's
events once the store has accepted it; nothing here writes job state or fires an event, so the
same code serves both. It takes a ``Runtime`` (what it uses), not the app.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import logs, serialization
from .clock import utcnow
from .context import JobContext, _current
from .errors import (
    ConveyorError,
    JobCancelled,
    JobInterrupted,
    JobTimeout,
    MemoryExceeded,
    WorkerLost,
)
from .jobs import AnyJob
from .models import AttemptOutcome, JobOutcome, JobRecord, JobState
from .retry import Retry

if TYPE_CHECKING:
    from .clock import Clock
    from .jobs import Registry
    from .store import Store

log = logging.getLogger("conveyor.job")

_INTERRUPTIONS = {
    JobTimeout: AttemptOutcome.TIMEOUT,
    WorkerLost: AttemptOutcome.WORKER_LOST,
    MemoryExceeded: AttemptOutcome.MEMORY_EXCEEDED,
    JobCancelled: AttemptOutcome.CANCELLED,
}

# the event each way an attempt ends fires, once the store has accepted its outcome
EVENT_OF = {JobState.SUCCEEDED: "succeeded", JobState.FAILED: "failed", JobState.DEAD: "dead",
            JobState.CANCELLED: "cancelled"}


@dataclass(frozen=True)
class Runtime:
    """What running a job needs: where its definition is, the time, and the store that
    ``current_job()`` reports progress and log lines to (a callable: reopened after fork)."""

    registry: Registry
    clock: Clock
    store: Callable[[], Store | None]


@dataclass
class Call:
    """A claimed job made ready to run."""

    job: JobRecord
    worker_id: str
    context: JobContext
    definition: AnyJob | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    started: float = 0.0

def prepare(rt: Runtime, job: JobRecord, worker_id: str) -> Call | JobOutcome:
    """Resolve the job's definition and decode its arguments, or the outcome explaining why not."""
    ctx = JobContext(
        id=job.id, name=job.name, queue=job.queue, attempt=job.attempt,
        max_attempts=job.max_attempts, lease=job.lease, _store=rt.store(),
    )
    call = Call(job, worker_id, ctx, started=time.perf_counter())
    try:
        call.definition = rt.registry.resolve(job.name)
        call.args = serialization.loads(job.args)
        call.kwargs = serialization.loads(job.kwargs)
        if not isinstance(call.args, list) or not isinstance(call.kwargs, dict):
            raise ValueError("stored arguments are not a JSON list and object")
    except Exception as e:
        return failure(rt, call, e)
    return call

def run_sync(rt: Runtime, call: Call) -> JobOutcome:
    assert call.definition is not None and call.args is not None and call.kwargs is not None
    token = _current.set(call.context)
    try:
        value = call.definition.func(*call.args, **call.kwargs)
    except BaseException as e:
        return failure(rt, call, e)
    finally:
        _current.reset(token)
    return success(rt, call, value)

async def run_async(rt: Runtime, call: Call) -> JobOutcome:
    assert call.definition is not None and call.args is not None and call.kwargs is not None
    token = _current.set(call.context)
    timeout = call.job.timeout
    try:
        coro = call.definition.func(*call.args, **call.kwargs)
        value = await (asyncio.wait_for(coro, timeout) if timeout else coro)
    except TimeoutError:
        return failure(rt, call, JobTimeout(f"job ran past its timeout of {timeout:g}s"))
    except BaseException as e:
        return failure(rt, call, e)
    finally:
        _current.reset(token)
    return success(rt, call, value)

def success(rt: Runtime, call: Call, value: Any) -> JobOutcome:
    try:
        result = serialization.dumps(value, path="result")
    except Exception as e:  # TypeError from our limits; RecursionError, ValueError from json
        return failure(rt, call, e)
    if call.context.cancel_requested:  # it returned after the request reached it: cancelled
        outcome = failure(rt, call, JobCancelled("returned after its cancellation was requested"))
        outcome.result = result
        return outcome
    outcome = JobOutcome(
        job_id=call.job.id, lease=call.job.lease or "", attempt=call.job.attempt,
        worker_id=call.worker_id, started_at=call.job.started_at or rt.clock.now(),
        state=JobState.SUCCEEDED, outcome=AttemptOutcome.SUCCEEDED, result=result, job=call.job,
    )
    _report(call, outcome)
    return outcome

def failure(rt: Runtime, call: Call, error: BaseException) -> JobOutcome:
    job = call.job
    policy: Retry = call.definition.retry if call.definition else Retry(attempts=job.max_attempts)
    kind = next((k for cls, k in _INTERRUPTIONS.items() if isinstance(error, cls)), None)
    retry_at = None
    if isinstance(error, JobCancelled) or call.context.cancel_requested:
        state, kind = JobState.CANCELLED, AttemptOutcome.CANCELLED  # never retried
    elif policy.should_retry(error, job.attempt, limit=job.max_attempts):
        state = JobState.FAILED
        retry_at = rt.clock.now() + policy.delay(job.attempt)
    else:
        state = JobState.DEAD
    is_ours = isinstance(error, ConveyorError) and not isinstance(error, JobInterrupted)
    outcome = JobOutcome(
        job_id=job.id, lease=job.lease or "", attempt=job.attempt, worker_id=call.worker_id,
        started_at=job.started_at or rt.clock.now(), state=state,
        outcome=kind or AttemptOutcome.ERROR, error_class=_class_name(error),
        error_message=_text(error), retry_at=retry_at,
        traceback=None if is_ours else _traceback(error), job=job, error=error,
    )
    _report(call, outcome)
    return outcome

def bare_outcome(call: Call) -> JobOutcome:
    """An outcome for ``call`` made without the app (when making one the usual way failed)."""
    job = call.job
    return JobOutcome(
        job_id=job.id, lease=job.lease or "", attempt=job.attempt, worker_id=call.worker_id,
        started_at=job.started_at or utcnow(), state=JobState.DEAD, outcome=AttemptOutcome.ERROR,
        job=job,
    )


def unrecordable(outcome: JobOutcome, error: BaseException) -> JobOutcome:
    """The same attempt, dead: what it produced could not be recorded, and ``error`` says why.
    Built from plain text only, so that this outcome itself can always be written."""
    return JobOutcome(
        job_id=outcome.job_id, lease=outcome.lease, attempt=outcome.attempt,
        worker_id=outcome.worker_id, started_at=outcome.started_at, state=JobState.DEAD,
        outcome=AttemptOutcome.ERROR, error_class=_class_name(error),
        error_message=f"the attempt's outcome could not be recorded: {_text(error)}",
        job=outcome.job, error=error,
    )


def _text(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:
        text = f"<{type(error).__name__} whose message cannot be shown>"
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()[:10_000]


def _traceback(error: BaseException) -> str | None:
    try:
        text = "".join(traceback.format_exception(error))
    except Exception:  # a RecursionError deep in a huge value, say
        return None
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()


def _class_name(error: BaseException) -> str:
    cls = type(error)
    if cls.__module__ in ("builtins", "conveyor.errors"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"

def _report(call: Call, outcome: JobOutcome) -> None:
    """The job's line (SPEC §7). Made without ``Logger.info``'s search of the stack for the
    caller (which would find this function on every line), and without a record at all when
    conveyor's own writer is where it goes (``logs.line``)."""
    level = _LEVEL_OF.get(outcome.state, logging.ERROR)
    if not log.isEnabledFor(level):
        return
    ms = (time.perf_counter() - call.started) * 1000 if call.started else 0.0
    message = "job succeeded" if level == logging.INFO else f"job {_verb(outcome.state)}"
    logs.line(log, level, message, _fields(call.job, ms, outcome), __file__)


_LEVEL_OF = {JobState.SUCCEEDED: logging.INFO, JobState.FAILED: logging.WARNING}

def _verb(state: JobState) -> str:
    return {JobState.FAILED: "failed, will retry", JobState.DEAD: "dead",
            JobState.CANCELLED: "cancelled"}.get(state, str(state))

def _fields(job: JobRecord, ms: float, outcome: JobOutcome) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "job_id": job.id, "job_name": job.name, "queue": job.queue, "attempt": job.attempt,
        "duration_ms": round(ms, 2),
    }
    if outcome.error_class:
        extra["error"] = outcome.error_summary
    if outcome.retry_at:
        extra["retry_at"] = outcome.retry_at.isoformat()
    return extra
