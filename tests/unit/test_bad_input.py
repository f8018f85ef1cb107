"""Bad input from Python: each is refused at once with one clear error, and nothing is stored."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conveyor import ArgumentEncodingError, ConfigurationError, Conveyor, StoreError, serialization
from conveyor.errors import StoreUnavailable
from conveyor.health import HealthServer
from conveyor.queues import QueueSpec
from conveyor.settings import Settings, load_settings
from conveyor.store import open_store


def nested(levels: int, leaf: Any = None) -> Any:
    """A value ``levels`` lists deep: nested(1) is [], nested(2) is [[]]."""
    value: Any = [] if leaf is None else [leaf]
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.fixture
def app(tmp_path: Path) -> Conveyor:
    return Conveyor(f"sqlite:///{tmp_path / 'never.db'}")


# --- 1. settings that no worker can honour ------------------------------------------------------
@pytest.mark.parametrize("rescue_after", [0, -1, "0", "0s"])
def test_rescue_after_must_be_positive(rescue_after: Any) -> None:
    with pytest.raises(ConfigurationError, match="rescue_after must be more than 0"):
        Conveyor("sqlite:///x.db", rescue_after=rescue_after)


def test_rescue_after_zero_from_the_environment_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="rescue_after"):
        load_settings(None, {}, {"CONVEYOR_RESCUE_AFTER": "0"})


@pytest.mark.parametrize(("heartbeat", "rescue"), [(60, 60), (61, 60), ("5s", "3s")])
def test_an_explicit_heartbeat_must_be_shorter_than_rescue_after(heartbeat: Any, rescue: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"heartbeat_interval .* must be shorter"):
        Conveyor("sqlite:///x.db", rescue_after=rescue, heartbeat_interval=heartbeat)


def test_negative_and_nan_durations_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="shutdown_timeout must not be negative"):
        Conveyor("sqlite:///x.db", shutdown_timeout=-1)
    with pytest.raises(ConfigurationError, match="poll_interval"):
        Conveyor("sqlite:///x.db", poll_interval=float("nan"))


@pytest.mark.parametrize(
    ("rescue", "beat"), [(3, 0.75), (1, 0.25), (60, 10.0), (600, 10.0), (0.5, 0.2)]
)
def test_the_default_heartbeat_follows_rescue_after(rescue: float, beat: float) -> None:
    settings = Conveyor("sqlite:///x.db", rescue_after=rescue).settings
    assert settings.heartbeat_every == beat
    assert settings.heartbeat_every < settings.rescue_after


def test_a_tiny_rescue_after_still_gets_a_shorter_heartbeat() -> None:
    assert Settings(rescue_after=0.1).heartbeat_every < 0.1


# --- 3. arguments and results past the encoding limits -------------------------------------------
def test_arguments_nested_2000_deep_raise_type_error_at_enqueue(app: Conveyor) -> None:
    @app.job
    def takes(value: Any) -> None: ...

    with pytest.raises(TypeError, match="nested deeper than 500 levels") as info:
        takes.prepare(nested(2000))
    assert isinstance(info.value, ArgumentEncodingError)
    assert "args[0][0]" in str(info.value)
    assert len(str(info.value)) < 300, "the place is shortened, not 2000 brackets long"


def test_nesting_is_allowed_up_to_500_levels() -> None:
    assert serialization.loads(serialization.encode_args([nested(500)])) == [nested(500)]
    assert serialization.loads(serialization.dumps(nested(500))) == nested(500)
    assert serialization.loads(serialization.encode_kwargs({"k": nested(500)})) == {"k": nested(500)}
    for encode in (lambda: serialization.encode_args([nested(501)]),
                   lambda: serialization.dumps(nested(501)),
                   lambda: serialization.encode_kwargs({"k": nested(501)})):
        with pytest.raises(ArgumentEncodingError, match="nested deeper than 500"):
            encode()


def test_a_value_that_contains_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ArgumentEncodingError, match="contains itself"):
        serialization.encode_args([loop])


@pytest.mark.parametrize("big", [10**5000, 2**63, -(2**63) - 1, 2**64],
                         ids=["10**5000", "2**63", "-2**63-1", "2**64"])
def test_integers_beyond_64_bits_raise_type_error_at_enqueue(app: Conveyor, big: int) -> None:
    @app.job
    def takes(value: Any) -> None: ...

    with pytest.raises(TypeError, match="beyond 64 bits") as info:
        takes.prepare(big)
    assert isinstance(info.value, ArgumentEncodingError)
    with pytest.raises(TypeError, match=r"kwargs\.value\.n\[1\]: .*beyond 64 bits"):
        takes.prepare(value={"n": [1, big]})


def test_the_64_bit_bounds_themselves_are_fine() -> None:
    edges = [2**63 - 1, -(2**63)]
    assert serialization.loads(serialization.encode_args(edges)) == edges
    assert serialization.loads(serialization.dumps({"n": edges})) == {"n": edges}


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff", "\udc80abc"])
def test_a_lone_surrogate_raises_type_error_at_enqueue(app: Conveyor, text: str) -> None:
    @app.job
    def takes(value: Any) -> None: ...

    with pytest.raises(TypeError, match="lone surrogate") as info:
        takes.prepare(text)
    assert isinstance(info.value, ArgumentEncodingError)
    with pytest.raises(TypeError, match=r"at args\[0\]\.x"):
        takes.prepare({"x": [text]})
    with pytest.raises(TypeError, match="dict key"):
        takes.prepare({text: 1})


@pytest.mark.parametrize(
    ("value", "reason"),
    [(nested(2000), "nested deeper"), (10**5000, "beyond 64 bits"), ("\ud800", "lone surrogate"),
     ({"a": [2**70]}, "beyond 64 bits"), ({"s": "caf\u00e9 \ud800"}, "lone surrogate")],
    ids=["deep", "10**5000", "surrogate", "nested-big-int", "nested-surrogate"],
)
def test_results_obey_the_same_rules(value: Any, reason: str) -> None:
    with pytest.raises(TypeError, match=reason) as info:
        serialization.dumps(value, path="result")
    assert isinstance(info.value, ArgumentEncodingError)
    assert "at result" in str(info.value)


def test_ordinary_values_still_round_trip() -> None:
    value = {"id": 7, "name": "caf\u00e9 \u2713", "when": datetime(2026, 1, 2, tzinfo=UTC),
             "$type": "user's own", "items": [1, 2.5, None, True, ("t", 1)]}
    back = serialization.loads(serialization.dumps(value))
    assert back == {**value, "items": [1, 2.5, None, True, ["t", 1]]}
    assert serialization.dumps(42) == "42"
    assert serialization.dumps("plain") == '"plain"'
    assert serialization.encode_args((1, 2, 3)) == "[1,2,3]"
    assert serialization.encode_args((1, "x", None, True)) == '[1,"x",null,true]'


# --- priorities -------------------------------------------------------------------------------------
@pytest.mark.parametrize("priority", [2**70, 2**31, -(2**31) - 1, 10**5000],
                         ids=["2**70", "2**31", "-2**31-1", "10**5000"])
def test_a_priority_beyond_32_bits_is_refused(app: Conveyor, priority: int) -> None:
    @app.job
    def noop() -> None: ...

    with pytest.raises(ValueError, match=r"priority .* out of range"):
        noop.options(priority=priority)
    with pytest.raises(ValueError, match="out of range"):
        app.job(name="other", priority=priority)(lambda: None)


@pytest.mark.parametrize("priority", [1.5, "high", None])
def test_a_priority_must_be_a_whole_number(app: Conveyor, priority: Any) -> None:
    with pytest.raises(ValueError, match="whole number"):
        app.job(priority=priority)(lambda: None)


def test_32_bit_priorities_are_fine(app: Conveyor) -> None:
    @app.job
    def noop() -> None: ...

    assert noop.options(priority=2**31 - 1).prepare().new_job.priority == 2**31 - 1
    assert noop.options(priority=-(2**31)).prepare().new_job.priority == -(2**31)


# --- 4. queue names no worker can serve --------------------------------------------------------------
BAD_QUEUES = ["", "   ", " mail", "mail ", "a,b", "a:b", "tab\there", "new\nline", "nul\x00",
              "bell\x07", "nbsp\u00a0", "\ud800", "x" * 201]


@pytest.mark.parametrize("queue", BAD_QUEUES)
def test_a_queue_no_worker_can_serve_is_refused_at_enqueue(app: Conveyor, queue: str) -> None:
    @app.job
    def noop() -> None: ...

    with pytest.raises(ValueError, match="invalid queue name") as info:
        noop.options(queue=queue)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="invalid queue name"):
        app.job(name="elsewhere", queue=queue)(lambda: None)
    with pytest.raises(ValueError, match="invalid queue name"):
        app.pause_queue(queue)
    with pytest.raises(ValueError, match="invalid queue name"):
        app.resume_queue(queue)
    assert not app.store_is_open, "nothing was opened"


@pytest.mark.parametrize("queue", ["mail", "mail-high", "my queue", "caf\u00e9", "x" * 200])
def test_ordinary_queue_names_are_fine(app: Conveyor, queue: str) -> None:
    @app.job
    def noop() -> None: ...

    assert noop.options(queue=queue).prepare().new_job.queue == queue
    assert QueueSpec.parse(f"{queue}:2,other").names == (queue, "other")


def test_the_worker_queue_option_refuses_the_same_names() -> None:
    for text in ("a\tb", "ok,bad\x07name", "ok:2,x\ny"):
        with pytest.raises(ConfigurationError, match="--queues"):
            QueueSpec.parse(text)


def test_pausing_a_queue_with_no_jobs_yet_is_allowed(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path / 'c.db'}")
    app.migrate()
    app.pause_queue("not-deployed-yet")
    assert [(q.queue, q.paused) for q in app.store.queue_stats()] == [("not-deployed-yet", True)]
    app.close()


# --- 7. calling an async job directly ------------------------------------------------------------------
def test_calling_an_async_job_without_a_loop_runs_it(app: Conveyor) -> None:
    @app.job
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert double(21) == 42


def test_calling_an_async_job_inside_a_loop_returns_an_awaitable(app: Conveyor) -> None:
    @app.job
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def main() -> int:
        return await double(4)

    assert asyncio.run(main()) == 8
    assert "await" in (double.__call__.__doc__ or "")


def test_calling_a_sync_job_is_unchanged(app: Conveyor) -> None:
    @app.job
    def add(x: int, y: int) -> int:
        return x + y

    assert add(1, 2) == 3


# --- 2 and 8. times ----------------------------------------------------------------------------------
def test_a_delay_past_the_year_9999_is_a_value_error(app: Conveyor) -> None:
    @app.job
    def noop() -> None: ...

    with pytest.raises(ValueError, match="not a time a job can run at"):
        noop.enqueue_in(99999999999 * 86400)
    with pytest.raises(ValueError, match="not a time a job can run at"):
        noop.enqueue_in(timedelta.max)
    assert not app.store_is_open


def test_a_time_after_9999_in_utc_is_a_value_error(app: Conveyor) -> None:
    @app.job
    def noop() -> None: ...

    late = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    with pytest.raises(ValueError, match="after the year 9999"):
        noop.enqueue_at(late)
    assert not app.store_is_open


def test_a_run_time_already_past_is_stored_as_ready_now(app: Conveyor) -> None:
    @app.job
    def noop() -> None: ...

    bound = noop.options()
    ancient = bound.__class__(noop, bound._options.__class__(run_at=datetime(1, 1, 1, tzinfo=UTC)))
    assert ancient.prepare().new_job.run_at is None
    future = datetime.now(UTC) + timedelta(hours=1)
    later = bound.__class__(noop, bound._options.__class__(run_at=future))
    assert later.prepare().new_job.run_at == future


# --- 2. health server addresses ----------------------------------------------------------------------
def _ok() -> tuple[bool, dict[str, Any]]:
    return True, {}


def test_a_health_port_in_use_is_a_configuration_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(ConfigurationError, match="another process is using that port"):
            HealthServer("127.0.0.1", taken.getsockname()[1], live=_ok, ready=_ok)
    finally:
        taken.close()


def test_a_health_host_that_is_not_a_host_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="--health-host 'not a host'"):
        HealthServer("not a host", 0, live=_ok, ready=_ok)


# --- 5 and 6. SQLite files that cannot be used --------------------------------------------------------
def test_a_file_that_is_not_sqlite_is_a_store_error_not_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 50)
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="is not a SQLite database") as info:
        store.schema_version()
    assert not isinstance(info.value, StoreUnavailable)
    store.close()


def test_a_corrupt_database_is_a_store_error_not_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with path.open("r+b") as f:
        f.seek(100)
        f.write(os.urandom(2000))
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="corrupt") as info:
        store.schema_version()
    assert not isinstance(info.value, StoreUnavailable)
    store.close()


def test_a_directory_in_place_of_the_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    store = open_store(f"sqlite:///{tmp_path / 'dir.db'}")
    with pytest.raises(StoreError, match="is a directory") as info:
        store.schema_version()
    assert not isinstance(info.value, StoreUnavailable)


def test_store_missing_names_a_sqlite_file_that_does_not_exist(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert "does not exist" in (app.store_missing() or "")
    assert not (tmp_path / "nothing.db").exists()
    app.migrate()
    assert app.store_missing() is None
    app.close()
    assert Conveyor("postgresql://u@h/db").store_missing() is None


@pytest.mark.parametrize(("sensitive", "error", "words"), [
    ("password", TypeError, "a list of argument names"),
    (["password", 3], TypeError, "must be a string, not 3"),
    (["password", ""], ValueError, "must not be empty"),
    (42, TypeError, "a list of argument names"),
])
def test_sensitive_must_be_a_list_of_argument_names(
    app: Conveyor, sensitive: Any, error: type[Exception], words: str,
) -> None:
    with pytest.raises(error, match=words) as raised:
        app.job(sensitive=sensitive)(lambda password: None)
    assert "\n" not in str(raised.value)


def test_sensitive_keys_are_stored_with_each_job(tmp_path: Path) -> None:
    def login(user: str, password: str) -> None: ...

    app = Conveyor(f"sqlite:///{tmp_path / 'jobs.db'}")
    app.migrate()
    try:
        job = app.job(sensitive=("password", "password", "otp"))(login)
        assert job.sensitive == ("password", "otp")
        handle = job.enqueue("ann", password="x")
        assert app.client.get(handle.id).sensitive == ("password", "otp", "#1")  # its position
    finally:
        app.close()


def test_a_sensitive_argument_passed_by_position_is_redacted_too(tmp_path: Path) -> None:
    from conveyor import views

    def login(user: str, password: str, /, *extra: object, otp: str = "") -> None: ...

    app = Conveyor(f"sqlite:///{tmp_path / 'jobs.db'}")
    app.migrate()
    try:
        job = app.job(sensitive=["password", "otp"])(login)
        by_position = app.client.get(job.enqueue("ann", "hunter2", {"password": "nested"}).id)
        assert views.shown_args(by_position) == (["ann", "[redacted]", {"password": "[redacted]"}], {})
        by_name = app.client.get(job.enqueue("bob", "pw", otp="123456").id)
        assert views.shown_args(by_name) == (["bob", "[redacted]"], {"otp": "[redacted]"})
        assert "hunter2" not in str(views.job_view(by_position))
    finally:
        app.close()
