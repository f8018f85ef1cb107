"""Job definitions: what ``@app.job`` returns, and the options it carries."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from . import serialization
from .errors import UnknownJob
from .flow import KeySource, Limit, RateLimit, Unique, limit_of, make_key, rate_of, unique_of
from .models import NewJob
from .queues import check_queue_name
from .retry import DEFAULT_RETRY, Retry
from .settings import parse_size

if TYPE_CHECKING:
    from .client import Client, JobHandle

P = ParamSpec("P")
R = TypeVar("R")
RESERVED = ("connection",)  # enqueue keywords that are conveyor's, not the job's
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1  # the stores keep it in a 32-bit column


@dataclass(frozen=True, slots=True)
class JobOptions:
    queue: str = "default"
    priority: int = 0
    timeout: float | None = None
    run_at: datetime | None = None
    unique: Unique | None = None
    concurrency: Limit | None = None
    rate: RateLimit | None = None


@dataclass(frozen=True, slots=True)
class PreparedJob:
    """A job with its arguments bound and encoded, ready for ``app.enqueue_many``."""

    definition: JobDefinition[Any, Any]
    new_job: NewJob


def job_name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}:{func.__qualname__}"


class _Enqueuer(Generic[P, R]):
    """Shared by a definition and its ``options(...)`` views."""

    _definition: JobDefinition[P, R]
    _options: JobOptions

    def options(
        self, *, queue: str | None = None, priority: int | None = None,
        timeout: float | timedelta | None = None, unique: bool | KeySource | None = None,
        unique_until: str | None = None, unique_for: timedelta | float | None = None,
        on_conflict: str | None = None, concurrency: Limit | str | None = None,
        rate_limit: RateLimit | str | None = None,
    ) -> BoundJob[P, R]:
        """This job with some options changed for the enqueues made through the result.
        ``unique=False`` turns uniqueness off; the others keep the job's own when not given."""
        changes: dict[str, Any] = {}
        if unique is not None or unique_until or unique_for is not None or on_conflict:
            changes["unique"] = unique_of(
                unique, unique_until, unique_for, on_conflict, self._options.unique
            )
        if concurrency is not None:
            changes["concurrency"] = limit_of(concurrency)
        if rate_limit is not None:
            changes["rate"] = rate_of(rate_limit)
        if queue is not None:
            changes["queue"] = _check_queue(queue)
        if priority is not None:
            changes["priority"] = check_priority(priority)
        if timeout is not None:
            changes["timeout"] = _seconds(timeout)
        return BoundJob(self._definition, replace(self._options, **changes))

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> PreparedJob:
        d = self._definition
        if kwargs or d.arity is None or not d.arity[0] <= len(args) <= d.arity[1]:
            try:  # the fast path above covers plain positional calls that obviously fit
                d.signature.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{d.name}: {e}") from None
        o = self._options
        run_at = o.run_at
        if run_at is not None and run_at <= d.client.clock.now():
            # due already: ready from the moment it is stored, so its wait (the queue's
            # latency) counts from then, not from a date before it existed
            run_at = None
        new = NewJob(
            name=d.name, args=serialization.encode_args(args),
            kwargs=serialization.encode_kwargs(kwargs), queue=o.queue, priority=o.priority,
            max_attempts=d.retry.attempts, timeout=o.timeout, run_at=run_at,
        )
        if d.sensitive:
            new.sensitive = d.sensitive_marks
        if o.unique is not None or o.concurrency is not None or o.rate is not None:
            _apply_flow(new, o, d, args, kwargs)
        return PreparedJob(d, new)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Store the job for a worker; returns its handle at once. ``connection=`` (reserved)
        writes it inside the caller's open transaction."""
        connection = kwargs.pop("connection", None)
        prepared = self.prepare(*args, **kwargs)
        return self._definition.client.enqueue(prepared, connection=connection)

    def enqueue_in(self, delay: timedelta | float, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        seconds = _seconds(delay)
        try:
            when = self._definition.client.clock.now() + timedelta(seconds=seconds)
        except (OverflowError, ValueError):  # past year 9999, or not a number at all
            raise ValueError(
                f"enqueue_in: a delay of {seconds:g} seconds is not a time a job can run at"
            ) from None
        return BoundJob(self._definition, replace(self._options, run_at=when)).enqueue(*args, **kwargs)

    def enqueue_at(self, when: datetime, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("enqueue_at needs an aware datetime (e.g. datetime.now(UTC))")
        try:
            when = when.astimezone(UTC)  # every store reads times back in UTC
        except OverflowError:
            raise ValueError(f"enqueue_at: {when.isoformat()} is after the year 9999 in UTC") from None
        return BoundJob(self._definition, replace(self._options, run_at=when)).enqueue(*args, **kwargs)


def _apply_flow(
    new: NewJob, o: JobOptions, d: JobDefinition[Any, Any], args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """The unique and concurrency keys of one call, as the store enforces them."""
    if o.unique is not None:
        new.unique_key = make_key(o.unique.key, d.name, d.signature, args, kwargs)
        new.unique_started = o.unique.until == "started"
        new.unique_for = o.unique.for_seconds
        new.raise_if_held = o.unique.on_conflict == "raise"
    if o.concurrency is not None:
        new.concurrency_key = make_key(o.concurrency.key, d.name, d.signature, args, kwargs)
        new.concurrency_max = o.concurrency.max
    if o.rate is not None:
        source = o.rate.key if o.rate.key is not None else d.name
        new.rate_key = make_key(source, d.name, d.signature, args, kwargs)
        new.rate_count, new.rate_period = o.rate.count, o.rate.period


class BoundJob(_Enqueuer[P, R]):
    def __init__(self, definition: JobDefinition[P, R], options: JobOptions) -> None:
        self._definition = definition
        self._options = options


class JobDefinition(_Enqueuer[P, R]):
    """A function registered as a job. Calling it runs it inline, now; its ``enqueue`` goes
    through ``client``, the app's."""

    def __init__(
        self, client: Client, func: Callable[P, R], *, name: str | None = None,
        queue: str = "default", priority: int = 0, timeout: float | timedelta | None = None,
        retry: Retry | int | None = None, max_memory: int | str | None = None,
        unique: bool | KeySource | None = None, unique_until: str | None = None,
        unique_for: timedelta | float | None = None, on_conflict: str | None = None,
        concurrency: Limit | str | None = None, rate_limit: RateLimit | str | None = None,
        sensitive: Iterable[str] | None = None,
    ) -> None:
        # argument keys whose values are never shown (views.shown_args), at any depth
        self.sensitive = sensitive_keys(sensitive)
        if isinstance(retry, int):
            retry = Retry(attempts=retry)
        # while it runs, its worker process's memory may not pass this (see worker.memory)
        self.max_memory = None if max_memory is None else parse_size(max_memory, "max_memory")
        self.client = client
        self.func = func
        self.name = name or job_name(func)
        self.retry = retry or DEFAULT_RETRY
        self.is_async = inspect.iscoroutinefunction(func)
        self.signature = inspect.signature(func)
        self.arity = _positional_arity(self.signature)
        # what each stored job carries: the names, and "#i" for the positional parameters
        # among them, so an argument passed by position is redacted like one passed by name
        self.sensitive_marks = self.sensitive + _positions(self.signature, self.sensitive)
        self._definition = self
        self._options = JobOptions(
            queue=_check_queue(queue), priority=check_priority(priority),
            timeout=None if timeout is None else _seconds(timeout),
            unique=unique_of(unique, unique_until, unique_for, on_conflict),
            concurrency=limit_of(concurrency), rate=rate_of(rate_limit),
        )
        self.__wrapped__ = func
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", self.name)

    @property
    def queue(self) -> str:
        return self._options.queue

    @property
    def timeout(self) -> float | None:
        return self._options.timeout

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, now, and return what it returns.

        An ``async def`` job called where no event loop is running in this thread is run to
        completion (``asyncio.run``) and its result returned. Called from inside a running loop
        (a coroutine, an async web handler), it returns the coroutine instead, so write
        ``await my_async_job(1)`` there, as with any coroutine function.
        """
        result = self.func(*args, **kwargs)
        if self.is_async and inspect.iscoroutine(result) and not _loop_running():
            return asyncio.run(result)  # type: ignore[no-any-return]
        return result

    def __repr__(self) -> str:
        return f"<job {self.name} queue={self.queue}>"


AnyJob = JobDefinition[Any, Any]
AsyncFunc = Callable[..., Awaitable[Any]]


class Registry:
    """Job definitions by name; a name not yet seen is imported from its ``module:function``."""

    def __init__(self) -> None:
        self._jobs: dict[str, AnyJob] = {}

    def add(self, definition: AnyJob) -> None:
        existing = self._jobs.get(definition.name)
        if existing is not None and existing.func is not definition.func:
            raise ValueError(f"two jobs are named {definition.name!r}; pass name= to one of them")
        self._jobs[definition.name] = definition

    def names(self) -> list[str]:
        return sorted(self._jobs)

    def get(self, name: str) -> AnyJob | None:
        return self._jobs.get(name)

    def resolve(self, name: str) -> AnyJob:
        """The definition for ``name``, importing its module if needed; UnknownJob otherwise."""
        found = self._jobs.get(name)
        if found is not None:
            return found
        module, sep, _ = name.partition(":")
        if sep and module:
            try:
                importlib.import_module(module)
            except Exception as e:
                raise UnknownJob(
                    f"job {name!r}: importing module {module!r} failed: {type(e).__name__}: {e}"
                ) from e
            found = self._jobs.get(name)
            if found is not None:
                return found
        raise UnknownJob(f"no job named {name!r} is registered with this app")


def _positional_arity(signature: inspect.Signature) -> tuple[int, int] | None:
    """(fewest, most) positional arguments when the signature has nothing but plain positional
    parameters; None when only ``Signature.bind`` can tell."""
    params = list(signature.parameters.values())
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not all(p.kind in plain for p in params):
        return None
    return sum(p.default is inspect.Parameter.empty for p in params), len(params)


def _positions(signature: inspect.Signature, names: tuple[str, ...]) -> tuple[str, ...]:
    """``#i`` for each positional parameter whose name is in ``names``."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p.name for p in signature.parameters.values() if p.kind in kinds]
    return tuple(f"#{i}" for i, name in enumerate(positional) if name in names)


def sensitive_keys(keys: Iterable[str] | None) -> tuple[str, ...]:
    """``sensitive=`` checked: a list of non-empty argument names (TypeError, ValueError)."""
    if keys is None:
        return ()
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise TypeError(
            f"sensitive must be a list of argument names, e.g. ['password'], not {keys!r}"
        )
    names = list(keys)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"sensitive: every argument name must be a string, not {name!r}")
        if not name:
            raise ValueError("sensitive: an argument name must not be empty")
    return tuple(dict.fromkeys(names))


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _check_queue(queue: str) -> str:
    return check_queue_name(queue)


def check_priority(priority: int) -> int:
    """A whole number that fits the stores' 32-bit column; ValueError otherwise."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        try:
            as_int = int(priority)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"priority must be a whole number, not {priority!r}") from None
        if as_int != priority:
            raise ValueError(f"priority must be a whole number, not {priority!r}")
        priority = as_int
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        bits = priority.bit_length()
        shown = str(priority) if bits <= 128 else f"(a {bits}-bit number)"
        raise ValueError(
            f"priority {shown} is out of range: it must be from {PRIORITY_MIN} to {PRIORITY_MAX}"
        )
    return priority


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
