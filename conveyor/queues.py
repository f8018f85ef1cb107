"""Which queues a worker listens to, and in what order it tries them."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError

MAX_NAME = 200


def queue_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a queue's name, or None if it can be one.

    A worker names its queues in ``--queues a:3,b`` (commas and colons are syntax there, and
    spaces around names are dropped), so a queue it could never be told to serve is refused.
    """
    if not isinstance(name, str):
        return f"a queue name is text, not {type(name).__name__}"
    if not name.strip():
        return "a queue name cannot be empty or blank"
    if len(name) > MAX_NAME:
        return f"a queue name is at most {MAX_NAME} characters"
    if name != name.strip():
        return "a queue name cannot start or end with a space"
    if "," in name or ":" in name:
        return "a queue name cannot hold ',' or ':' (they separate queues and weights in --queues)"
    if not name.replace(" ", "").isprintable():
        return "a queue name cannot hold control characters, line breaks or invisible characters"
    return None


def check_queue_name(name: str) -> str:
    """``name`` if it can be a queue's name; ValueError saying why not otherwise."""
    problem = queue_name_problem(name)
    if problem is not None:
        raise ValueError(f"invalid queue name {name!r}: {problem}")
    return name


@dataclass(frozen=True)
class QueueSpec:
    """``critical:3,default:2,low:1`` (weighted) or ``critical,default,low`` with ``strict``.

    Weighted: claims rotate through the queues by smooth weighted round-robin, so while all have
    work a queue of weight 3 gets exactly three claims for every one of a weight-1 queue, spread
    out rather than in bursts, and no queue starves. Strict: always in the given
    order, so a later queue runs only when the earlier ones are empty.
    """

    entries: tuple[tuple[str, int], ...] = (("default", 1),)
    strict: bool = False

    @classmethod
    def parse(cls, text: str | None, *, strict: bool = False) -> QueueSpec:
        if text is None or not text.strip():
            return cls(strict=strict)
        entries: list[tuple[str, int]] = []
        for part in text.split(","):
            name, _, weight = part.strip().partition(":")
            name = name.strip()
            if not name:
                raise ConfigurationError(f"--queues {text!r}: empty queue name")
            problem = queue_name_problem(name)
            if problem is not None:
                raise ConfigurationError(f"--queues {text!r}: {problem}")
            try:
                w = int(weight) if weight else 1
            except ValueError:
                raise ConfigurationError(
                    f"--queues {text!r}: weight of {name!r} must be a whole number"
                ) from None
            if w < 1:
                raise ConfigurationError(f"--queues {text!r}: weight of {name!r} must be >= 1")
            if any(n == name for n, _ in entries):
                raise ConfigurationError(f"--queues {text!r}: {name!r} listed twice")
            entries.append((name, w))
        if strict and any(w != 1 for _, w in entries):
            raise ConfigurationError("--strict takes queues without weights")
        return cls(tuple(entries), strict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.entries)

    def selector(self) -> QueueOrder:
        return QueueOrder(self)

    def __str__(self) -> str:
        if self.strict:
            return ",".join(self.names) + " (strict)"
        return ",".join(f"{n}:{w}" for n, w in self.entries)


class QueueOrder:
    """The order to try queues in for each claim (one per worker; not thread-safe)."""

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        self._current = [0] * len(spec.entries)
        self._total = sum(w for _, w in spec.entries)

    def next(self) -> list[str]:
        """First choice first; the rest follow as fallbacks when earlier queues are empty."""
        if self.spec.strict or len(self.spec.entries) == 1:
            return list(self.spec.names)
        for i, (_, weight) in enumerate(self.spec.entries):
            self._current[i] += weight
        ranked = sorted(range(len(self._current)), key=lambda i: -self._current[i])
        self._current[ranked[0]] -= self._total
        return [self.spec.entries[i][0] for i in ranked]
