"""When a schedule's ticks fall: a cron expression read by croniter in a time zone, or a fixed
interval counted from the Unix epoch. Pure: every answer comes from the instant it is given.

Cron ticks are computed on the local wall clock of the schedule's time zone, then placed on
the time line:

- a local time that does not exist (skipped by a spring-forward change) fires once, at the
  first valid instant after the gap;
- a local time that occurs twice (an autumn fall-back) fires once, at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..errors import ConfigurationError, JobNotFound

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIELDS = ("minute", "hour", "day of month", "month", "day of week", "second")
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_PROBE = ("0", "0", "1", "1", "*", "0")  # a valid value for each field, to test one at a time
_SKIP_LIMIT = 10_000  # candidates passed over at most while looking for the next tick


class CronError(ConfigurationError, ValueError):
    """A schedule that cannot be read: a malformed expression, an unknown time zone."""


class UnknownSchedule(JobNotFound):
    """No schedule by that name, in the store or in the code."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin'") from None


def check_expression(expression: str) -> str:
    """The expression, normalised; CronError naming the first bad field otherwise."""
    if not isinstance(expression, str) or not expression.strip():
        raise CronError("cron expression is empty: use 5 fields (minute hour day month weekday)")
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise CronError(f"cron expression {text!r}: unknown alias; use one of {', '.join(ALIASES)}")
        return text.lower()
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise CronError(
            f"cron expression {text!r} has {len(parts)} fields: use 5 (minute hour day month"
            " weekday), or 6 with seconds last"
        )
    for i, part in enumerate(parts):
        probe = list(_PROBE[: len(parts)])
        probe[i] = part
        if not _valid(" ".join(probe)):
            raise CronError(f"cron expression {text!r}: {FIELDS[i]} field {part!r} is invalid")
    if not _valid(text):  # each field fine alone, not together (e.g. 31 in February only)
        raise CronError(f"cron expression {text!r} never fires")
    return text


def _valid(text: str) -> bool:
    try:
        it = croniter(text, datetime(2000, 1, 1))
        it.get_next(datetime)
    except Exception:  # croniter's errors have no common base worth naming
        return False
    return True


@dataclass(frozen=True)
class Timing:
    """A cron ``expression`` in ``timezone``, or ``every`` seconds since the epoch."""

    expression: str | None = None
    every: float | None = None
    timezone: str = "UTC"

    @classmethod
    def of(cls, expression: str | None, every: timedelta | float | None, timezone: str) -> Timing:
        if (expression is None) == (every is None):
            raise CronError("a schedule needs a cron expression or every=, not both")
        zone(timezone)
        if every is not None:
            seconds = every.total_seconds() if isinstance(every, timedelta) else float(every)
            if not seconds >= 1 or seconds != int(seconds):
                raise CronError(f"every= must be a whole number of seconds, at least 1, not {seconds:g}")
            return cls(every=seconds, timezone=timezone)
        assert expression is not None
        return cls(expression=check_expression(expression), timezone=timezone)

    @classmethod
    def from_description(cls, text: str, timezone: str) -> Timing:
        """The timing ``describe()`` wrote (read back from the store)."""
        if text.startswith("every "):
            amount, unit = text[6:-1], text[-1]
            size = {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
            return cls(every=float(int(amount) * size), timezone=timezone)
        return cls(expression=check_expression(text), timezone=timezone)

    def describe(self) -> str:
        if self.every is not None:
            return f"every {_span(self.every)}"
        return str(self.expression)

    def next_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (aware), in UTC."""
        if self.every is not None:
            step = int(self.every)
            elapsed = (after - EPOCH) // timedelta(seconds=1)
            return EPOCH + timedelta(seconds=(elapsed // step + 1) * step)
        tz = zone(self.timezone)
        local = after.astimezone(tz).replace(tzinfo=None)
        it = croniter(self.expression, local)
        for _ in range(_SKIP_LIMIT):
            candidate = _place(it.get_next(datetime), tz)
            if candidate > after:
                return candidate
        raise CronError(f"cron expression {self.expression!r}: no tick found after {after.isoformat()}")

    def ticks(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Ticks in ``(after, until]``, oldest first, at most ``limit``."""
        out: list[datetime] = []
        at = after
        while len(out) < limit:
            at = self.next_after(at)
            if at > until:
                break
            out.append(at)
        return out


def _place(local: datetime, tz: ZoneInfo) -> datetime:
    """A naive local wall time as an instant: its first occurrence if it occurs twice, the end
    of the gap if it does not occur at all."""
    first = local.replace(tzinfo=tz, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local:
        return instant  # exists (the first of two, when ambiguous)
    # in a gap: fold=0 reads it with the offset before the change, landing after the gap ends;
    # fold=1 with the offset after it, landing before the gap began. The gap ends between them.
    low = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = instant
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= local:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0)


def _span(seconds: float) -> str:
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"
