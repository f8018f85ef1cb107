"""What ``make bench`` reports about the machine and the stores it ran on (and starts Redis if
it does not answer)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("CONVEYOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
               "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
               "--logfile", "/var/log/redis/ci.log"]


def ensure_redis() -> str | None:
    """Redis answers (started here if it does not and the URL is the default local one): its version."""
    from bench.peers.common import REDIS_URL, redis_client

    def version() -> str:
        r = redis_client()
        try:
            return str(r.info("server")["redis_version"])
        finally:
            r.close()

    try:
        return version()
    except Exception:
        if "127.0.0.1:6379" not in REDIS_URL:
            return None
    try:
        subprocess.run(REDIS_START, check=True, timeout=30, capture_output=True)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"make bench: Redis is not answering and could not be started: {e}", file=sys.stderr)
        return None
    for _ in range(50):
        try:
            return version()
        except Exception:
            time.sleep(0.1)
    return None


def postgres_version() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]).split()[0] if row else "?"
    except Exception:
        return None


def pg_setting(name: str) -> str:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            return str(row[0]) if row else "?"
    except Exception:
        return "?"


def cpu_times() -> list[int]:
    """The machine's cumulative CPU time by kind (/proc/stat's first line; empty elsewhere)."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return []


def steal_share(before: list[int], after: list[int]) -> str:
    """How much of the CPU time a virtual machine's host kept for others meanwhile (steal)."""
    if len(before) < 8 or len(after) < 8:
        return "unknown"
    total = sum(after) - sum(before)
    return f"{(after[7] - before[7]) / total * 100:.0f}%" if total else "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pip_freeze(packages: set[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"],
                         capture_output=True, text=True, timeout=60).stdout
    norm = {p.lower().replace("_", "-") for p in packages}
    keep = []
    for line in out.splitlines():
        name = line.split("==")[0].split(" @ ")[0].strip().lower().replace("_", "-")
        if name in norm:
            keep.append(line.strip())
    if "conveyor" in norm:
        from importlib.metadata import version

        keep.append(f"conveyor=={version('conveyor')} (this repository, {git_head()})")
    return sorted(keep, key=str.lower)


def git_head() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "conveyor"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"commit {out}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"


def sqlite3_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version
