"""Fixtures shared by every test layer.

``store_url`` is parametrized over both backends. PostgreSQL gets one fresh database per test
run (created here, dropped at the end) and its tables are emptied before each test. Outside CI a
missing PostgreSQL server skips those tests with a clear reason; in CI (CI=true) it is an error.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.store import Store, open_store

PG_ADMIN_URL = os.environ.get(
    "CONVEYOR_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TABLES = (
    "conveyor_jobs, conveyor_attempts, conveyor_logs, conveyor_queues, conveyor_processes,"
    " conveyor_leaders, conveyor_job_dependencies, conveyor_cron_schedules, conveyor_cron_ticks,"
    " conveyor_unique_locks, conveyor_rate_starts, conveyor_audit, conveyor_history,"
    " conveyor_metric_totals, conveyor_history_marks"
)
BACKENDS = ["sqlite", "postgres"]


def _with_db(url: str, dbname: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        if os.environ.get("CI"):
            pytest.fail("psycopg is not installed; run make test")
        pytest.skip("psycopg is not installed")
    name = f"conveyor_test_{uuid.uuid4().hex[:10]}"
    try:
        _create_database(psycopg, name)
    except psycopg.OperationalError as e:
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL} ({str(e).strip().splitlines()[0]})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + "; set CONVEYOR_TEST_DATABASE_URL")
    url = _with_db(PG_ADMIN_URL, name)
    store = open_store(url)
    store.migrate()
    store.close()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _create_database(psycopg: Any, name: str) -> None:
    """CREATE DATABASE, retried while another run copies template1 at the same moment."""
    for attempt in range(20):
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
                return
            except psycopg.errors.ObjectInUse:
                if attempt == 19:
                    raise
        time.sleep(0.1 + random.random() * 0.3)


def _reset_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty store of each backend, as a URL (for apps and subprocess workers)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'conveyor.db'}"
        store = open_store(url)
        store.migrate()
        store.close()
        return url
    url = request.getfixturevalue("pg_url")
    _reset_postgres(url)
    return str(url)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()
