"""Flow-control options of a job: unique keys and concurrency limits. Pure: each option turns
a job's arguments into the key the store enforces; nothing here touches the store."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from . import serialization

KeySource = str | Callable[..., str]
UNTIL = ("started", "finished")
ON_CONFLICT = ("skip", "raise")


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``max`` jobs of one key run at once; the others wait ``blocked``.

    ``key`` is a string (one limit for every job it is given to) or a function called with the
    job's arguments that returns one, e.g. ``Limit(key=lambda account_id: f"acct:{account_id}")``.
    """

    key: KeySource
    max: int = 1

    def __post_init__(self) -> None:
        _check_source(self.key, "Limit key")
        if isinstance(self.max, bool) or not isinstance(self.max, int) or self.max < 1:
            raise ValueError(f"Limit max must be a whole number of at least 1, not {self.max!r}")


@dataclass(frozen=True, slots=True)
class Unique:
    """How a job is kept unique: its key, when the key is given up, what a duplicate does."""

    key: Literal[True] | KeySource
    until: str = "finished"
    for_seconds: float | None = None
    on_conflict: str = "skip"


def limit_of(value: Limit | str | None) -> Limit | None:
    """``concurrency=`` as given: a Limit, a string key (max 1), or None."""
    if value is None or isinstance(value, Limit):
        return value
    if isinstance(value, str):
        return Limit(value)
    raise TypeError(f"concurrency must be a Limit or a string key, not {type(value).__name__}")


def unique_of(
    value: bool | KeySource | None, until: str | None, for_: timedelta | float | None,
    on_conflict: str | None, base: Unique | None = None,
) -> Unique | None:
    """``unique=`` and its companions as given, over ``base`` (the job's own setting)."""
    if value is False:
        return None
    if value is None and base is None:
        if until is not None or for_ is not None or on_conflict is not None:
            raise ValueError("unique_until, unique_for and on_conflict need unique=")
        return None
    key: Literal[True] | KeySource = base.key if value is None and base else value  # type: ignore[assignment]
    if key is not True:
        _check_source(key, "unique")
    seconds = (base.for_seconds if base else None) if for_ is None else _seconds(for_)
    spec = Unique(key, until or (base.until if base else "finished"), seconds,
                  on_conflict or (base.on_conflict if base else "skip"))
    if spec.until not in UNTIL:
        raise ValueError(f"unique_until must be 'started' or 'finished', not {spec.until!r}")
    if spec.on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict must be 'skip' or 'raise', not {spec.on_conflict!r}")
    if spec.for_seconds is not None and not spec.for_seconds > 0:
        raise ValueError(f"unique_for must be a positive duration, not {for_!r}")
    return spec


def make_key(
    source: Literal[True] | KeySource, name: str, signature: inspect.Signature,
    args: tuple[Any, ...], kwargs: dict[str, Any],
) -> str:
    """The key for one call: ``True`` is the job name and its canonical arguments (the same
    call however the arguments were passed, defaults filled in); a string is itself; a function
    is called with the job's arguments."""
    if source is True:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        encoded = serialization.encode_kwargs(dict(bound.arguments))
        canonical = json.dumps(json.loads(encoded), sort_keys=True, separators=(",", ":"))
        return f"{name}:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"
    if isinstance(source, str):
        return source
    key = source(*args, **kwargs)
    if not isinstance(key, str) or not key:
        raise TypeError(f"{name}: a key function must return a non-empty string, not {key!r}")
    return key


def _check_source(source: Any, what: str) -> None:
    if isinstance(source, str):
        if not source:
            raise ValueError(f"{what} must not be an empty string")
    elif source is not True and not callable(source):
        raise TypeError(f"{what} must be a string or a function of the job's arguments")


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most N starts in any window of the period, e.g. ``RateLimit("10/s")``; ``key`` (a
    string, or a function of the job's arguments) shares the rate between jobs, per key. No key:
    the job's name."""

    rate: str
    key: KeySource | None = None

    def __post_init__(self) -> None:
        parse_rate(self.rate)
        if self.key is not None:
            _check_source(self.key, "RateLimit key")

    @property
    def count(self) -> int:
        return parse_rate(self.rate)[0]

    @property
    def period(self) -> float:
        return parse_rate(self.rate)[1]


def parse_rate(text: str) -> tuple[int, float]:
    """``"100/m"`` -> (100, 60.0): a whole number of starts per second, minute or hour."""
    count, sep, unit = str(text).strip().partition("/")
    if not sep or unit.strip() not in PERIODS or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"a rate is starts per period, like '20/s', '100/m' or '500/h'; not {text!r}")
    return int(count), PERIODS[unit.strip()]


def rate_of(value: RateLimit | str | None) -> RateLimit | None:
    """``rate_limit=`` as given: a RateLimit, a rate string (per job name), or None."""
    if value is None or isinstance(value, RateLimit):
        return value
    if isinstance(value, str):
        return RateLimit(value)
    raise TypeError(f"rate_limit must be a RateLimit or a rate like '20/s', not {value!r}")
