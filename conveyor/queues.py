"""Which queues a worker listens to, and in what order it tries them."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True)
class QueueSpec:
    """``critical:3,default:2,low:1`` (weighted) or ``critical,default,low`` with ``strict``.

    Weighted: each claim tries the queues in a random order drawn by weight, so over time a busy
    queue gets slots in proportion to its weight and no queue starves. Strict: always in the given
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
            if not name:
                raise ConfigurationError(f"--queues {text!r}: empty queue name")
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

    def order(self, rng: random.Random | random.SystemRandom | None = None) -> list[str]:
        """The queues to try for the next claim, first choice first."""
        if self.strict or len(self.entries) == 1:
            return list(self.names)
        r = rng or random
        pool = list(self.entries)
        out = []
        while pool:
            total = sum(w for _, w in pool)
            pick = r.random() * total
            for i, (name, w) in enumerate(pool):
                pick -= w
                if pick < 0 or i == len(pool) - 1:
                    out.append(name)
                    pool.pop(i)
                    break
        return out

    def __str__(self) -> str:
        if self.strict:
            return ",".join(self.names) + " (strict)"
        return ",".join(f"{n}:{w}" for n, w in self.entries)
