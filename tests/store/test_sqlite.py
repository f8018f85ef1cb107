"""SQLite-only behaviour: no raw sqlite3 error leaves the store, whatever connection it used."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from conveyor.errors import ConveyorError, SchemaError, StoreError, StoreUnavailable
from conveyor.models import NewJob
from conveyor.store import open_store, store_missing
from conveyor.store.sqlite import sqlite_path


@pytest.fixture
def url(tmp_path: Path) -> str:
    store = open_store(f"sqlite:///{tmp_path / 'conveyor.db'}")
    store.migrate()
    store.close()
    return store.url


def one_line(error: BaseException) -> bool:
    return "\n" not in str(error) and not isinstance(error, sqlite3.Error)


def test_enqueue_in_the_callers_transaction_without_schema_says_to_migrate(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    app = sqlite3.connect(tmp_path / "empty.db")
    try:
        with pytest.raises(SchemaError, match="run: conveyor migrate") as missing:
            store.job_insert_many([NewJob("a")], connection=app)
        assert one_line(missing.value)
    finally:
        app.close()
        store.close()


def test_enqueue_in_the_callers_transaction_while_the_file_is_locked(url: str) -> None:
    store = open_store(url)
    holder = sqlite3.connect(sqlite_path(url), isolation_level=None)
    app = sqlite3.connect(sqlite_path(url), timeout=0.05)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(StoreUnavailable, match="locked") as busy:
            store.job_insert_many([NewJob("a", unique_key="k")], connection=app)
        assert one_line(busy.value)
        with pytest.raises(StoreUnavailable):
            store.job_insert_many([NewJob("a")], connection=app)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        app.close()
        store.close()


def test_enqueue_on_a_closed_connection_is_a_store_error(url: str) -> None:
    store = open_store(url)
    app = sqlite3.connect(sqlite_path(url))
    app.close()
    try:
        with pytest.raises(StoreError) as closed:
            store.job_insert_many([NewJob("a")], connection=app)
        assert one_line(closed.value)
    finally:
        store.close()


def test_wait_for_jobs_on_a_store_closed_meanwhile_raises_a_store_error(url: str) -> None:
    store = open_store(url)
    store.wait_for_jobs(0)  # the waiting thread's connection is open
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            store.wait_for_jobs(5)
        except BaseException as e:  # collected, asserted below
            raised.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    store.close()  # closes every connection of the store, the polling one too
    waiter.join(10)
    assert len(raised) == 1
    assert isinstance(raised[0], ConveyorError) and one_line(raised[0])


def test_store_missing_names_a_sqlite_file_that_opening_would_create(tmp_path: Path, url: str) -> None:
    absent = tmp_path / "absent.db"
    assert "does not exist" in (store_missing(f"sqlite:///{absent}") or "")
    assert not absent.exists()
    assert store_missing(url) is None  # it exists
    assert store_missing(f"sqlite:///{tmp_path / 'no' / 'dir.db'}") is None  # opening says why
    assert store_missing("postgresql://u@h/db") is None
