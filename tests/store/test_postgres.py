"""What only the PostgreSQL store does: URL handling, errors naming the problem, NOTIFY
wake-ups, advisory-lock leadership, and recovery when the server drops connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest

from conveyor.errors import ConfigurationError, StoreError, StoreUnavailable
from conveyor.models import AttemptOutcome, JobOutcome, JobState, NewJob
from conveyor.store import Store, open_store
from conveyor.store.postgres import PostgresStore

postgres_only = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
T_FAR = datetime(2100, 1, 1, tzinfo=UTC)


def terminate(url: str, where: str) -> int:
    """Kill this database's conveyor backends matching ``where`` (as a server restart would)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            f" AND application_name = 'conveyor' AND {where}"
        ).fetchall()
    return len(rows)


def backends(url: str) -> int:
    """How many conveyor sessions this database still has."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'conveyor'"
        ).fetchone()
    return int(row[0]) if row else 0


def leader_pid_filter() -> str:
    return "pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"


def wakes(listener: Store, action: Callable[[], object], timeout: float = 0.5) -> bool:
    """Whether ``action`` (by another store) wakes a waiting ``listener`` well before timeout."""
    listener.wait_for_jobs(0)  # listening, and nothing pending
    action()
    start = time.monotonic()
    listener.wait_for_jobs(timeout)
    return time.monotonic() - start < timeout / 2


# --- URLs and connection errors --------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "postgresql://user:secret@host:notaport/db",
    "postgresql://user:secret@[::1/db",
    "postgres://user:secret@host/db?bogus=1",
    "mysql://user:secret@host/db",
    "postgresql:/host/db",
])
def test_a_malformed_url_is_a_one_line_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as bad:
        PostgresStore(url)
    assert "\n" not in str(bad.value) and "secret" not in str(bad.value)
    assert "malformed PostgreSQL URL" in str(bad.value)


@postgres_only
@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_every_url_spelling_opens_the_store(store_url: str, scheme: str) -> None:
    url = scheme + store_url[store_url.index("://"):]
    store = open_store(url)
    try:
        assert isinstance(store, PostgresStore) and store.url == url
        assert store.queue_stats() == []
    finally:
        store.close()


def test_an_unreachable_server_fails_fast_naming_the_problem() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/conveyor")
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as down:
        store.job_get(1)
    assert time.monotonic() - start < 5
    message = str(down.value)
    assert "\n" not in message and "127.0.0.1:1" in message and "refused" in message.lower()
    store.close()


@postgres_only
def test_a_missing_database_is_named(store_url: str) -> None:
    store = PostgresStore(store_url.rpartition("/")[0] + "/conveyor_no_such_db")
    with pytest.raises(StoreUnavailable, match='database "conveyor_no_such_db" does not exist'):
        store.migrate()
    store.close()


def test_wait_for_jobs_never_raises_while_the_server_is_unreachable() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/conveyor")
    for _ in range(2):
        start = time.monotonic()
        store.wait_for_jobs(0.2)
        assert 0.15 <= time.monotonic() - start < 2
    store.close()


@postgres_only
def test_a_constraint_violation_is_a_store_error_not_an_outage(store: Store) -> None:
    # a held unique key is not a violation (test_inserts.py); a job without a name is
    with pytest.raises(StoreError) as clash:
        store.job_insert_many([NewJob(None)])  # type: ignore[arg-type]
    assert not isinstance(clash.value, StoreUnavailable)
    assert "\n" not in str(clash.value)


# --- recovery --------------------------------------------------------------------------------
@postgres_only
def test_the_pool_recovers_after_the_server_drops_its_connections(store: Store) -> None:
    store.job_insert_many([NewJob("a")])
    assert terminate(store.url, "true") >= 1
    assert len(store.job_ids_by_state(JobState.READY)) == 1


@postgres_only
def test_the_listener_reconnects_after_its_connection_is_killed(store: Store) -> None:
    other = open_store(store.url)
    try:
        store.wait_for_jobs(0)
        assert terminate(store.url, "query = 'LISTEN conveyor_jobs'") == 1
        start = time.monotonic()
        store.wait_for_jobs(0.3)  # notices, drops the connection, sleeps out the timeout
        assert 0.25 <= time.monotonic() - start < 2
        assert wakes(store, lambda: other.job_insert_many([NewJob("a")]))
    finally:
        other.close()


@postgres_only
def test_the_claim_connection_recovers_after_the_server_drops_it(store: Store) -> None:
    store.job_insert_many([NewJob("a"), NewJob("b")])
    assert len(store.job_claim("w1", "default", 1)) == 1  # the claim loop's own connection
    assert terminate(store.url, "true") >= 1
    deadline = time.monotonic() + 5  # until the killed backends are gone and their sockets closed
    while backends(store.url):
        assert time.monotonic() < deadline, "terminated backends still there"
        time.sleep(0.02)
    (job,) = store.job_claim("w1", "default", 1)
    assert job.name == "b" and job.state == JobState.RUNNING


@postgres_only
def test_timestamps_are_utc_whatever_the_servers_time_zone(store_url: str) -> None:
    """conveyor's sessions run in UTC (times come back without a conversion each); a time zone
    set on the database, and options given in the URL, change nothing of that."""
    with psycopg.connect(store_url, autocommit=True) as admin:
        db = admin.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        admin.execute(f'ALTER DATABASE "{db}" SET TimeZone = \'Asia/Tokyo\'')
    store = PostgresStore(store_url + "?options=-c%20statement_timeout%3D4321")
    try:
        at = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
        (job_id,) = [i.id for i in store.job_insert_many([NewJob("a")], now=at)]
        job = store.job_get(job_id)
        assert job is not None and job.created_at == at and job.created_at.tzinfo is UTC
        (claimed,) = store.job_claim("w1", "default", 1, now=at)
        assert claimed.started_at == at and claimed.started_at.tzinfo is UTC  # type: ignore[union-attr]
        assert store._rows("SHOW statement_timeout")[0][0] == "4321ms"
    finally:
        store.close()
        with psycopg.connect(store_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{db}" RESET TimeZone')


# --- wake-ups --------------------------------------------------------------------------------
@postgres_only
def test_writes_that_make_jobs_ready_wake_listeners(store: Store) -> None:
    other = open_store(store.url)
    try:
        later = NewJob("later", run_at=T_FAR, max_attempts=5)
        assert not wakes(store, lambda: other.job_insert_many([later]))
        assert wakes(store, lambda: other.jobs_promote(now=T_FAR))
        assert wakes(store, lambda: other.job_insert_many([NewJob("now", max_attempts=2)]))
        job = other.job_claim("w1", "default", 1)[0]
        assert wakes(store, lambda: other.job_release([(job.id, job.lease or "")]))
        job = other.job_claim("w1", "default", 1)[0]
        assert wakes(store, lambda: other.jobs_rescue(["w1"], "lost"))
        job = other.job_claim("w1", "default", 1)[0]
        dead = JobOutcome(job_id=job.id, lease=job.lease or "", attempt=job.attempt,
                          worker_id="w1", started_at=job.started_at or T_FAR,
                          state=JobState.DEAD, outcome=AttemptOutcome.ERROR)
        assert other.job_finish_many([dead]) == [True]
        assert wakes(store, lambda: other.job_retry([job.id]))
    finally:
        other.close()


@postgres_only
def test_the_wake_up_is_sent_only_when_the_enqueue_commits(store: Store) -> None:
    store.wait_for_jobs(0)
    with psycopg.connect(store.url) as app:
        store.job_insert_many([NewJob("a")], connection=app)
        start = time.monotonic()
        store.wait_for_jobs(0.3)
        assert time.monotonic() - start >= 0.25  # nothing yet: still uncommitted
        app.commit()
        start = time.monotonic()
        store.wait_for_jobs(5)
        assert time.monotonic() - start < 1


# --- leadership ------------------------------------------------------------------------------
@postgres_only
def test_leadership_ends_with_the_leaders_session(store: Store) -> None:
    other = open_store(store.url)
    try:
        assert store.leader_acquire("maintenance", "a", 1)
        assert not other.leader_acquire("maintenance", "b", 1)
        store.close()  # a crashed leader: its session, and so its lock, is gone
        deadline = time.monotonic() + 5  # once the server has ended that session
        while not other.leader_acquire("maintenance", "b", 1):
            assert time.monotonic() < deadline, "the lock outlived its session"
            time.sleep(0.02)
    finally:
        other.close()


@postgres_only
def test_a_leader_that_lost_its_connection_reacquires_or_yields(store: Store) -> None:
    other = open_store(store.url)
    try:
        assert store.leader_acquire("maintenance", "a", 1)
        assert terminate(store.url, leader_pid_filter()) == 1
        assert store.leader_acquire("maintenance", "a", 1)  # nobody else took it
        assert terminate(store.url, leader_pid_filter()) == 1
        assert other.leader_acquire("maintenance", "b", 1)
        assert not store.leader_acquire("maintenance", "a", 1)
    finally:
        other.close()


# --- bulk ----------------------------------------------------------------------------------
@postgres_only
def test_a_large_batch_is_inserted_in_input_order(store: Store) -> None:
    jobs = [NewJob(f"j{i}", priority=-i) for i in range(3000)]
    done = threading.Event()
    racer = open_store(store.url)

    def race() -> None:  # another writer drawing ids at the same time
        while not done.is_set():
            racer.job_insert_many([NewJob("other")])

    thread = threading.Thread(target=race)
    thread.start()
    try:
        ids = [i.id for i in store.job_insert_many(jobs)]
    finally:
        done.set()
        thread.join(10)
        racer.close()
    assert ids == sorted(ids) and len(set(ids)) == 3000
    for n in range(0, 3000, 250):
        assert (store.job_get(ids[n]) or jobs[-1]).name == f"j{n}"


