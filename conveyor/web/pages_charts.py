"""The overview's charts: per-minute history (the store's ``history_list``) summed over the
queues and drawn as small SVG line charts on the server (no script, no inline style: the
template writes the SVG elements from these numbers, escaped like everything else)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

WIDTH = 300
HEIGHT = 80


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str
    values: list[float | None]  # one per minute, oldest first; None: no sample that minute
    points: str  # SVG polyline points
    area: str  # SVG polygon points (the line closed down to the axis)
    top: float  # the value at the top of the chart
    last: float | None

    @property
    def label(self) -> str:
        return "" if self.last is None else f"{self.last:g} {self.unit}".strip()


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def by_minute(history: Sequence[Any], at: datetime, minutes: int) -> list[list[Any]]:
    """The samples of each of the last ``minutes`` minutes (every queue's), oldest first."""
    end = minute_of(at)
    start = end - timedelta(minutes=minutes - 1)
    slots: list[list[Any]] = [[] for _ in range(minutes)]
    for sample in history:
        index = int((minute_of(sample.minute) - start).total_seconds() // 60)
        if 0 <= index < minutes:
            slots[index].append(sample)
    return slots


def total(field: str) -> Callable[[list[Any]], float | None]:
    return lambda samples: float(sum(getattr(s, field) for s in samples)) if samples else None


def failures(samples: list[Any]) -> float | None:
    return float(sum(s.failed + s.dead for s in samples)) if samples else None


def latency(samples: list[Any]) -> float | None:
    known = [s.latency for s in samples if s.latency is not None]
    if known:
        return round(float(max(known)), 3)
    return 0.0 if samples else None


SERIES: tuple[tuple[str, str, str, Callable[[list[Any]], float | None]], ...] = (
    ("throughput", "Throughput", "jobs/min", total("succeeded")),
    ("failures", "Failures", "/min", failures),
    ("depth", "Queue depth", "ready", total("ready")),
    ("latency", "Latency", "s", latency),
)


def draw(values: list[float | None]) -> tuple[str, str, float]:
    """Polyline and area points for ``values`` (gaps drawn as 0), and the top value."""
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    step = WIDTH / max(len(values) - 1, 1)
    coords = [
        (round(i * step, 1), round(HEIGHT - (v or 0.0) / top * (HEIGHT - 4), 1))
        for i, v in enumerate(values)
    ]
    points = " ".join(f"{x:g},{y:g}" for x, y in coords)
    area = f"0,{HEIGHT} {points} {WIDTH},{HEIGHT}" if coords else ""
    return points, area, top


def charts(history: Sequence[Any], at: datetime, minutes: int) -> list[Chart]:
    slots = by_minute(history, at, minutes)
    out = []
    for key, title, unit, measure in SERIES:
        values = [measure(samples) for samples in slots]
        points, area, top = draw(values)
        last = next((v for v in reversed(values) if v is not None), None)
        out.append(Chart(key, title, unit, values, points, area, top, last))
    return out
