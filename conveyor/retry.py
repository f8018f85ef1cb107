"""Retry policy: how many attempts, how long to wait between them, which errors count."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

Backoff = str | Callable[[int], float]
_KINDS = ("exponential", "linear", "fixed")


@dataclass(frozen=True)
class Retry:
    """``attempts`` counts every attempt, the first included: ``Retry(attempts=1)`` never retries.

    ``backoff`` is ``"exponential"`` (``base * 2**(n-1)``), ``"linear"`` (``base * n``),
    ``"fixed"`` (``base``) or a callable taking the number of the attempt that just failed and
    returning seconds. Delays are capped at ``max`` and get up to ``jitter`` (a fraction) of random
    spread so a thundering herd of failures does not retry in lock-step.

    ``retry_on``: only these exception classes are retried (default: any ``Exception``).
    ``discard_on``: these go straight to ``dead`` without further attempts.

    The default, for a job defined without ``retry=``, is what Sidekiq and Oban users expect:
    ``Retry()`` is 20 attempts, exponential from 15 s with jitter, capped at an hour between
    attempts — about 12 hours of retries before the job is ``dead`` (and kept 30 days). A job
    lost with its worker process is run again whatever its policy says (see ``POISON_AFTER``).
    """

    attempts: int = 20
    backoff: Backoff = "exponential"
    base: float = 15.0
    max: float = 3600.0
    jitter: float = 0.25
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    discard_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Retry(attempts=...) counts the first attempt and must be >= 1")
        if isinstance(self.backoff, str) and self.backoff not in _KINDS:
            raise ValueError(f"backoff must be one of {', '.join(_KINDS)} or a callable")
        if not callable(self.backoff) and not isinstance(self.backoff, str):
            raise ValueError("backoff must be a string or a callable")
        if self.base < 0 or self.max < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("base and max must be >= 0 and jitter within 0..1")

    def should_retry(self, exc: BaseException, attempt: int, limit: int | None = None) -> bool:
        """Whether a failure of ``attempt`` (1-based) earns another attempt; ``limit`` replaces
        ``attempts`` when the store granted a different number (a dead job retried by hand)."""
        if isinstance(exc, self.discard_on):
            return False
        if not isinstance(exc, self.retry_on):
            return False
        return attempt < (self.attempts if limit is None else limit)

    def is_discarded(self, exc: BaseException) -> bool:
        return isinstance(exc, self.discard_on)

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> timedelta:
        """Seconds to wait after ``attempt`` failed, before the next one."""
        if callable(self.backoff):
            return timedelta(seconds=max(0.0, float(self.backoff(attempt))))
        if self.backoff == "exponential":
            seconds = self.base * 2 ** min(attempt - 1, 62)
        elif self.backoff == "linear":
            seconds = self.base * attempt
        else:
            seconds = self.base
        seconds = min(seconds, self.max)
        if self.jitter:
            seconds += seconds * self.jitter * (rng or random).random()
        return timedelta(seconds=seconds)


DEFAULT_RETRY = Retry()
