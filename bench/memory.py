"""Worker memory under a long run: RSS of the worker process after 10k and after 200k jobs.

    python -m bench.memory [--jobs 200000] [--store sqlite|postgres]
"""

from __future__ import annotations

import argparse
import subprocess
import time

from bench.__main__ import fresh_store, start_worker, stop, use


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def worker_child(supervisor: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True, text=True)
        if out.stdout.split():
            return int(out.stdout.split()[0])
        time.sleep(0.05)
    raise RuntimeError("worker process did not start")


def measure(url: str, n: int, checkpoints: tuple[int, ...], limit: float = 900) -> dict[int, int]:
    jobs = use(url)
    for first in range(0, n, 5000):
        jobs.app.enqueue_many([jobs.noop.prepare(i) for i in range(first, min(n, first + 5000))])
    supervisor = start_worker(url, 1, 8)
    child = worker_child(supervisor)
    readings: dict[int, int] = {}
    start = time.monotonic()
    try:
        pending = list(checkpoints)
        while pending and time.monotonic() - start < limit:
            left = sum(s.count("ready") + s.count("running") for s in jobs.app.store.queue_stats())
            done = n - left
            while pending and done >= pending[0]:
                readings[pending.pop(0)] = rss_kb(child)
            time.sleep(0.2)
    finally:
        stop(supervisor)
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    checkpoints = (10_000, args.jobs // 2, args.jobs)
    with fresh_store(args.store) as url:
        readings = measure(url, args.jobs, checkpoints)
    base = readings.get(10_000, 0)
    print(f"| jobs done ({args.store}) | worker RSS | growth since 10k |")
    print("|---|---|---|")
    for done, kb in readings.items():
        growth = f"{(kb - base) / base * 100:+.1f}%" if base else "-"
        print(f"| {done:,} | {kb / 1024:.1f} MiB | {growth} |")


if __name__ == "__main__":
    main()
