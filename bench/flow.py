"""``make bench``'s flow-control section: what unique jobs and concurrency keys cost conveyor.

For each store, side by side and alternating (plain, flow, plain, flow ...; median of ``--runs``):
enqueue one call at a time of the no-op job against the same job defined with ``unique=True``
(distinct arguments, so every job is created), and a drain of ``--jobs`` no-op jobs against a drain
of as many jobs whose job carries ``concurrency=Limit(key=lambda i: f"k:{i % 100}", max=1)``.
The measurements are conveyor_bench's (enqueue_one / enqueue_unique, drain / drain_keyed), each
run a subprocess with a hard time limit, as in the main table.
"""

from __future__ import annotations

import argparse
from typing import Any

# (plain metric, flow metric, time limit in s) in conveyor_bench
PAIRS = (("enqueue_one", "enqueue_unique", 180), ("drain", "drain_keyed", 300))


def measure_pair(bench: Any, system: str, plain: str, flow: str, n: int, limit: float) -> tuple[Any, Any]:
    """Medians of ``plain`` and ``flow`` for ``system``, their runs alternating."""
    results: dict[str, list[dict[str, Any]]] = {plain: [], flow: []}
    for _ in range(bench.args.runs):
        for metric in (plain, flow):
            results[metric].append(bench.attempt(system, metric, n, limit))
    return bench.median(results[plain]), bench.median(results[flow])


def ratio(plain: Any, flow: Any) -> str:
    if isinstance(plain, float | int) and isinstance(flow, float | int) and plain:
        return f"{flow / plain:.2f}"
    return "—"


def section(bench: Any, args: argparse.Namespace, one_by_one: int, pg_version: str | None,
            fmt_rate: Any) -> list[str]:
    """Measure, print each row as it comes, and return the section's Markdown lines."""
    header = ["| store | enqueue plain/s | enqueue unique/s | ratio | drain plain/s | drain 100 keys/s "
              "| ratio |", "|---|---|---|---|---|---|---|"]
    print("\n" + "\n".join(header), flush=True)
    rows: list[str] = []
    for store in ("sqlite", "postgres"):
        if store == "postgres" and pg_version is None:
            rows.append("| postgres | n/a (not reachable) | — | — | — | — | — |")
            print(rows[-1], flush=True)
            continue
        cells: list[str] = []
        for (plain, flow, limit), n in zip(PAIRS, (one_by_one, args.jobs), strict=True):
            p, f = measure_pair(bench, f"conveyor-{store}", plain, flow, n, limit)
            cells += [fmt_rate(p), fmt_rate(f), ratio(p, f)]
        rows.append(f"| {store} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return [
        "",
        f"## conveyor flow control (median of {args.runs})",
        "",
        *header,
        *rows,
        "",
        f"Enqueue: {one_by_one:,} jobs one call each, the no-op job as in the first table against the same "
        "job defined with `unique=True` (distinct arguments, so every job is created: the cost of the "
        f"key and its unique index). Drain: {args.jobs:,} no-op jobs against as many whose job carries "
        '`concurrency=Limit(key=lambda i: f"k:{i % 100}", max=1)` (100 distinct keys, each held by one '
        "job at a time), same worker and timing as the first table. Ratio: flow / plain. Plain and flow "
        "alternate run by run.",
    ]
