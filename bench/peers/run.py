"""Run one measurement of one system in this process and print it as JSON (the last line).

    python -m bench.peers.run SYSTEM METRIC N

SYSTEM is a key of SYSTEMS (``conveyor-postgres``, ``celery``, ...); METRIC a function of its module
(enqueue_one, enqueue_bulk, drain, latency, raw_stores' postgres_1 ...) or ``describe`` (the module's
STORE, WORKER, BULK, PACKAGES, DRAIN_MAX). A METRIC ending in ``_roundtrip`` is the metric without
that ending, run with ``BENCH_ROUNDTRIP=1``: the jobs do one Redis round trip before their append
(see common.hit).

measure() is the parent's side: it runs that command in a new session with a hard time limit, kills
the whole process group when the limit passes, drops the run's PostgreSQL database, and turns every
failure into a reason string.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from typing import Any

# system -> (module in bench.peers, variant passed to its configure())
SYSTEMS: dict[str, tuple[str, str | None]] = {
    "conveyor-sqlite": ("conveyor_bench", "sqlite"),
    "conveyor-postgres": ("conveyor_bench", "postgres"),
    "celery": ("celery_bench", None),
    "rq": ("rq_bench", None),
    "dramatiq": ("dramatiq_bench", None),
    "huey": ("huey_bench", None),
    "procrastinate": ("procrastinate_bench", None),
    "pgqueuer": ("pgqueuer_bench", None),
    "arq": ("arq_bench", None),
    "saq": ("saq_bench", None),
    "raw": ("raw_stores", None),
    "memory": ("memory_bench", None),
    "floors": ("floors", None),
}
DESCRIBED = ("STORE", "WORKER", "BULK", "PACKAGES", "DRAIN_MAX")


def load(system: str):  # type: ignore[no-untyped-def]
    name, variant = SYSTEMS[system]
    module = importlib.import_module(f"bench.peers.{name}")
    if variant is not None:
        module.configure(variant)
    return module


def main() -> None:
    system, metric, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if metric.endswith("_roundtrip"):  # before common is imported: it reads the variable
        os.environ["BENCH_ROUNDTRIP"] = "1"
        metric = metric.removesuffix("_roundtrip")
    from bench.peers import common

    try:
        module = load(system)
        if metric == "describe":
            value = {k: getattr(module, k, None) for k in DESCRIBED}
        else:
            fn = getattr(module, metric, None)
            value = None if fn is None else fn(n)
        out: dict[str, Any] = {"value": value, "notes": common.NOTES}
    except Exception as e:  # reported as a row "n/a (reason)"
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:120], "notes": common.NOTES}
    print("\n" + json.dumps(out), flush=True)


def measure(system: str, metric: str, n: int, limit: float, env: dict[str, str] | None = None,
            python: str = sys.executable) -> dict[str, Any]:
    """{"value": ...} or {"error": reason}, plus "notes" and "seconds"."""
    db = f"bench_peers_{uuid.uuid4().hex[:8]}"
    log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    log.close()
    full_env = {**os.environ, **(env or {}), "BENCH_DB_NAME": db, "BENCH_WORKER_LOG": log.name}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    full_env["PYTHONPATH"] = root
    start = time.monotonic()
    proc = subprocess.Popen([python, "-m", "bench.peers.run", system, metric, str(n)], cwd=root, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        result: dict[str, Any] = {"error": f"no result within the {limit:.0f} s limit", "notes": []}
    else:
        try:
            result = json.loads(stdout.decode().strip().splitlines()[-1])
        except (IndexError, ValueError):
            tail = (stderr.decode().strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            result = {"error": tail[:160], "notes": []}
    finally:
        # workers left behind by a killed run are in the same group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            from bench.peers.common import drop_pg

            drop_pg(db)
    result["seconds"] = time.monotonic() - start
    if "error" in result:
        result["stderr"] = stderr.decode()[-3000:]
        with open(log.name, errors="replace") as f:
            result["worker_log"] = f.read()[-3000:]
    os.unlink(log.name)
    return result


if __name__ == "__main__":
    main()
