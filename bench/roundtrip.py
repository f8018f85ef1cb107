"""``make bench``'s round-trip section: a job that does a little I/O, each system on its defaults.

The round-trip job sends one pipelined Redis INCR/SETNX/SET and waits for the reply before the
probe's append (bench/peers/common.py ``hit``), as a job touching a cache or an API would. For
each system of the first table, a drain of ``--jobs`` such jobs with the worker configuration of
that table; conveyor twice, with its default logging (one INFO line per job event, to the
worker's log file) and with ``CONVEYOR_LOG_LEVEL=WARNING``, and the file-append drain of the first
table in both settings too, so that the logging cost is measured on both jobs. In the same run:
the bare loop of the round-trip job (2 processes, no job system: the most any system could
drain), PostgreSQL's latency floor (bench/peers/floors.py) and conveyor's enqueue→start latency
on PostgreSQL with its defaults. Every figure's runs alternate with all the others (run 1 of
everything, then run 2 ...), each the median of ``--runs``.
"""

from __future__ import annotations

import argparse
from typing import Any

CONVEYOR = ("conveyor-sqlite", "conveyor-postgres")
# (system, metric, label) of conveyor's rows: default logging, then per-job logging off
CONVEYOR_RUNS = (("drain_default", "default (INFO per job)"), ("drain", "`CONVEYOR_LOG_LEVEL=WARNING`"))


def _plan(measured: list[tuple[str, str, str, int]], args: argparse.Namespace,
          pg: bool) -> list[tuple[str, str, int, float]]:
    """Every (system, metric, n, limit) of the section, in the order each round runs them."""
    plan: list[tuple[str, str, int, float]] = []
    for system, _, _, n in measured:
        if system in CONVEYOR:
            for metric, _ in CONVEYOR_RUNS:
                plan += [(system, metric, n, 300), (system, f"{metric}_roundtrip", n, 300)]
        else:
            plan.append((system, "drain_roundtrip", n, 300))
    plan.append(("floors", "roundtrip_loop", args.jobs, 240))
    if pg and any(m[0] == "conveyor-postgres" for m in measured):
        plan += [("floors", "pg_latency", args.latency_jobs, 180),
                 ("conveyor-postgres", "latency_default", args.latency_jobs, 180)]
    return plan


def _runs(values: list[Any]) -> str:
    shown = [f"{v:,.0f}" for v in values if isinstance(v, int | float)]
    return " / ".join(shown) if shown else "—"


def section(bench: Any, args: argparse.Namespace, measured: list[tuple[str, str, str, int]],
            pg_version: str | None, fmt_rate: Any) -> list[str]:
    plan = _plan(measured, args, pg_version is not None)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {(s, m): [] for s, m, _, _ in plan}
    for _ in range(args.runs):
        for system, metric, n, limit in plan:
            results[(system, metric)].append(bench.attempt(system, metric, n, limit))

    def median(system: str, metric: str) -> Any:
        return bench.median(results.get((system, metric), []))

    def each(system: str, metric: str) -> str:
        return _runs([r.get("value") for r in results.get((system, metric), []) if "error" not in r])

    loop = median("floors", "roundtrip_loop")
    rows = []

    def share(v: Any) -> str:
        ok = isinstance(v, int | float) and isinstance(loop, int | float) and loop
        return f"{v / loop * 100:.0f}%" if ok else "—"

    for system, name, store, _ in measured:
        if system in CONVEYOR:
            for metric, label in CONVEYOR_RUNS:
                rt = median(system, f"{metric}_roundtrip")
                rows.append(f"| {name} | {store} | {label} | {fmt_rate(median(system, metric))} | "
                            f"{fmt_rate(rt)} ({each(system, f'{metric}_roundtrip')}) | {share(rt)} |")
        else:
            rt = median(system, "drain_roundtrip")
            rows.append(f"| {name} | {store} | its defaults, as in the first table | see the first table | "
                        f"{fmt_rate(rt)} ({each(system, 'drain_roundtrip')}) | {share(rt)} |")
    rows.append(f"| bare loop, no job system | redis | 2 processes | — | {fmt_rate(loop)} "
                f"({each('floors', 'roundtrip_loop')}) | 100% |")
    lines = [
        "",
        f"## The round-trip job, each system on its defaults ({args.jobs:,} jobs, median of {args.runs})",
        "",
        "| system | store | settings | file-append drain jobs/s | round-trip drain jobs/s (each run) "
        "| of the bare loop |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        *_ratios(measured, median),
        *_latency(median, results),
        "",
        "The round-trip job sends one pipelined Redis INCR/SETNX/SET (redis-py; the asyncio client in "
        "async peers) and waits for the reply before the probe's append. conveyor's file-append "
        "figures here are the first table's drain, measured again in this section's alternation, "
        "once with its default logging. The bare loop calls the same job body in 2 processes "
        "with no job system: the most any system could drain on this machine. Every figure of the "
        "section alternates run by run with all the others.",
    ]
    print("\n".join(lines), flush=True)
    return lines


def _ratio(a: Any, b: Any) -> str:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return f"{a / b:.2f}"
    return "n/a"


def _ratios(measured: list[tuple[str, str, str, int]], median: Any) -> list[str]:
    peers = {system: median(system, "drain_roundtrip") for system, _, store, _ in measured
             if system not in CONVEYOR}
    redis = {s: v for s, v in peers.items() if isinstance(v, int | float)
             and next(m[2] for m in measured if m[0] == s) == "redis"}
    fastest = max(redis, key=redis.__getitem__) if redis else None
    sq, pg = median("conveyor-sqlite", "drain_default_roundtrip"), median("conveyor-postgres",
                                                                             "drain_default_roundtrip")
    out = ["Ratios, round-trip job, conveyor on its defaults:", ""]
    if "pgqueuer" in peers:
        out.append(f"- PostgreSQL / PgQueuer: **{_ratio(pg, peers['pgqueuer'])}**")
    if fastest:
        out.append(f"- SQLite / the fastest Redis peer ({fastest}): **{_ratio(sq, redis[fastest])}**")
    costs = []
    for store in ("sqlite", "postgres"):
        system = f"conveyor-{store}"
        plain = _ratio(median(system, "drain_default"), median(system, "drain"))
        trip = _ratio(median(system, "drain_default_roundtrip"), median(system, "drain_roundtrip"))
        costs.append(f"{store} file-append {plain}, round-trip {trip}")
    out.append("- default logging / `WARNING` (1.00: logging is free): " + "; ".join(costs))
    return out


def _latency(median: Any, results: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    floor = median("floors", "pg_latency")
    conveyor = median("conveyor-postgres", "latency_default")
    if ("floors", "pg_latency") not in results:
        return []

    def cell(v: Any, i: int) -> str:
        return f"{v[i]:.2f}" if isinstance(v, list) and len(v) > i else str(v)

    runs = [r["value"] for r in results[("conveyor-postgres", "latency_default")] if "error" not in r]
    spread = " / ".join(f"{v[0]:.1f}-{v[2]:.1f}" for v in runs) or "—"
    return [
        "",
        "PostgreSQL latency, in ms from the start of the enqueue call (500 jobs at ~100/s into an "
        "idle worker; same run, alternated):",
        "",
        "| | p50 | p99 |",
        "|---|---|---|",
        f"| floor: the enqueue (INSERT + NOTIFY) committed | {cell(floor, 0)} | {cell(floor, 1)} |",
        f"| floor: the notification reached a listener | {cell(floor, 2)} | {cell(floor, 3)} |",
        f"| floor: that listener's claim committed | {cell(floor, 4)} | {cell(floor, 5)} |",
        f"| conveyor, default settings: the job started | {cell(conveyor, 0)} | {cell(conveyor, 2)} |",
        "",
        f"conveyor p50-p99 of each run: {spread}. The floor is a bare psycopg loop (bench/peers/floors.py): "
        "a one-int row inserted with NOTIFY in one commit, a LISTEN connection in another process "
        "that claims it with `FOR UPDATE SKIP LOCKED` in a commit of its own.",
        *([f"p50 above the floor's claim: {conveyor[0] - floor[4]:+.2f} ms; p99 / p50: "
           f"{conveyor[2] / conveyor[0]:.1f}"] if isinstance(floor, list) and isinstance(conveyor, list)
          and conveyor[0] else []),
    ]
