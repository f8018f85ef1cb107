"""A short chaos run in the suite (``make chaos`` runs the long one): kills lose no job."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytest

from bench.chaos import run
from tests import pgcluster
from tests.invariants import check_invariants

# PostgreSQL is restarted mid-run: on the suite's private cluster, never the shared server
private_cluster = pgcluster.private_cluster
private_pg_url = pgcluster.private_pg_url


def test_random_worker_kills_lose_no_job(store_url: str, request: pytest.FixtureRequest) -> None:
    cluster = None
    if store_url.startswith("postgresql"):
        cluster = request.getfixturevalue("private_cluster")
        store_url = request.getfixturevalue("private_pg_url")
    result = run(store_url, 1200, kill_every=1.5, restart=cluster, limit=240)
    print("\n" + result.table(store_url.split(":")[0]))
    assert result.kills >= 5, "the run was long enough to kill workers"
    assert result.lost == 0
    assert result.succeeded + result.poisoned == 1200
    assert result.max_rescue_s < 5, "a killed child's jobs are rescued at once"
    check_invariants(store_url, workers_stopped=True)  # run() has stopped every worker
