"""How ``make bench`` runs a measurement: each in a subprocess with a time limit (bench/peers/run.py),
a failed run tried once more, medians over runs that alternate between the systems."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

RETRY_PAUSE = 10.0  # s before a failed run is tried again


class Bench:
    """Runs the measurements through bench.peers.run, keeps the medians, notes and failures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.notes: list[str] = []
        self.env = {"CONVEYOR_BENCH_PROCESSES": str(args.processes),
                    "CONVEYOR_BENCH_CONCURRENCY": str(args.concurrency)}

    def once(self, system: str, metric: str, n: int, limit: float) -> dict:  # type: ignore[type-arg]
        from bench.peers.run import measure

        r = measure(system, metric, n, limit, self.env)
        for note in r.get("notes") or []:
            self.notes.append(f"{system} {metric}: {note}")
        if "error" in r and self.args.verbose:
            print(f"--- {system} {metric} failed: {r['error']}", r.get("stderr", ""), r.get("worker_log", ""),
                  sep="\n", file=sys.stderr)
        return r

    def attempt(self, system: str, metric: str, n: int, limit: float) -> dict:  # type: ignore[type-arg]
        """One run; a failed run is tried once more after a pause (the stores are shared with
        other work on this machine, e.g. a test suite restarting PostgreSQL)."""
        r = self.once(system, metric, n, limit)
        if "error" in r:
            time.sleep(RETRY_PAUSE)
            self.notes.append(f"{system} {metric}: a run failed ({r['error']}) and was tried again")
            r = self.once(system, metric, n, limit)
            if "error" in r:
                self.notes.append(f"{system} {metric}: a run failed twice ({r['error']})")
        return r

    @staticmethod
    def median(results: list[dict]):  # type: ignore[no-untyped-def, type-arg]
        """Median over the runs of a number or of each element of a tuple; or "n/a (reason)"."""
        values = [r["value"] for r in results if "error" not in r]
        if not values:
            return f"n/a ({results[0]['error']})" if results else "n/a (not run)"
        if values[0] is None:
            return None
        if isinstance(values[0], list):
            return [statistics.median(v[i] for v in values) for i in range(len(values[0]))]
        return statistics.median(values)

    def repeated(self, system: str, metric: str, n: int, limit: float):  # type: ignore[no-untyped-def]
        return self.median([self.attempt(system, metric, n, limit) for _ in range(self.args.runs)])

    def alternated(self, systems: list[tuple[str, int]], metric: str, limit: float):  # type: ignore[no-untyped-def]
        """``metric`` for each (system, n), run 1 of every system, then run 2 of every system...:
        on a machine whose speed drifts (a shared host), each system sees the same spread of
        conditions. Returns {system: median}."""
        results: dict[str, list[dict]] = {system: [] for system, _ in systems}  # type: ignore[type-arg]
        for _ in range(self.args.runs):
            for system, n in systems:
                results[system].append(self.attempt(system, metric, n, limit))
        return {system: self.median(found) for system, found in results.items()}


def fmt_rate(v) -> str:  # type: ignore[no-untyped-def]
    if isinstance(v, str):
        return v
    if v is None:
        return "—"
    return f"{v:,.0f}"


def fmt_latency(v) -> str:  # type: ignore[no-untyped-def]
    if isinstance(v, str):
        return v
    if v is None:
        return "—"
    return " / ".join("∞" if x == float("inf") else f"{x:.1f}" for x in v)
