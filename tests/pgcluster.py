"""Fixtures for tests that take PostgreSQL down: a private cluster the suite starts itself.

Tests never stop or reconfigure a server they did not start. A test that needs an outage asks
for ``private_pg_url`` (a fresh, migrated database on the private cluster) and restarts
``private_cluster``; the server at CONVEYOR_TEST_DATABASE_URL is never touched by it.

Test modules import both fixtures by name::

    from tests.pgcluster import private_cluster, private_pg_url  # noqa: F401

One cluster serves the whole run, however many modules import the fixtures; it is started on
first use and stopped and deleted when the run ends. Without the server binaries the tests
that need it are skipped (an error when CI is set).
"""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import Iterator

import pytest

from bench.pgcluster import ClusterUnavailable, PrivateCluster

_cluster: PrivateCluster | None = None
_failure: str | None = None


def shared_cluster() -> PrivateCluster:
    """The run's private cluster, started on first call."""
    global _cluster, _failure
    if _failure is not None:
        raise ClusterUnavailable(_failure)
    if _cluster is None:
        try:
            cluster = PrivateCluster()
            atexit.register(cluster.destroy)
            cluster.start()
        except ClusterUnavailable as e:
            _failure = str(e)
            raise
        _cluster = cluster
    return _cluster


@pytest.fixture(scope="session")
def private_cluster() -> PrivateCluster:
    """The private PostgreSQL cluster; tests may stop and restart it. Running on entry."""
    try:
        import psycopg  # noqa: F401
    except ImportError:  # pragma: no cover
        if os.environ.get("CI"):
            pytest.fail("psycopg is not installed; run make test")
        pytest.skip("psycopg is not installed")
    try:
        cluster = shared_cluster()
    except ClusterUnavailable as e:
        message = f"cannot start a private PostgreSQL cluster: {e}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster.ensure_running()
    return cluster


@pytest.fixture
def private_pg_url(private_cluster: PrivateCluster) -> Iterator[str]:
    """A fresh, migrated database on the private cluster for one test; dropped afterwards."""
    from conveyor.store import open_store

    private_cluster.ensure_running()  # an earlier test may have failed mid-outage
    name = f"conveyor_test_{uuid.uuid4().hex[:10]}"
    url = private_cluster.create_database(name)
    store = open_store(url)
    store.migrate()
    store.close()
    yield url
    private_cluster.ensure_running()
    private_cluster.drop_database(name)
