from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from conveyor import ConfigurationError, Conveyor
from conveyor.queues import QueueSpec
from conveyor.settings import load_settings, parse_duration, parse_size


def test_durations_and_sizes() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("10m") == 600
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration(timedelta(hours=1)) == 3600
    assert parse_size("512MB") == 512 * 1024**2
    with pytest.raises(ConfigurationError, match="not a duration"):
        parse_duration("soon")


def test_explicit_settings_win_over_environment_which_wins_over_defaults() -> None:
    env = {"CONVEYOR_RESCUE_AFTER": "5s", "CONVEYOR_SHUTDOWN_TIMEOUT": "3",
           "CONVEYOR_DATABASE_URL": "sqlite:///env.db"}
    s = load_settings(None, {"rescue_after": 9}, env)
    assert s.rescue_after == 9
    assert s.shutdown_timeout == 3
    assert s.database_url == "sqlite:///env.db"
    assert s.retention_succeeded == 7 * 86400
    assert load_settings("sqlite:///mine.db", {}, env).database_url == "sqlite:///mine.db"


def test_unknown_setting_and_bad_log_format_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown setting"):
        Conveyor("sqlite:///x.db", rescue_afterr=3)
    with pytest.raises(ConfigurationError, match="log_format"):
        Conveyor("sqlite:///x.db", log_format="xml")


def test_defining_an_app_and_jobs_opens_nothing(tmp_path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/never.db")

    @app.job
    def noop() -> None: ...

    assert not (tmp_path / "never.db").exists()


def test_weighted_order_gives_exact_shares_and_fallbacks() -> None:
    order = QueueSpec.parse("a:3,b:2,c:1").selector()
    picks = [order.next() for _ in range(600)]
    assert Counter(p[0] for p in picks) == {"a": 300, "b": 200, "c": 100}
    assert all(sorted(p) == ["a", "b", "c"] for p in picks), "every queue stays a fallback"


def test_strict_order_is_fixed() -> None:
    order = QueueSpec.parse("critical,default,low", strict=True).selector()
    assert {tuple(order.next()) for _ in range(10)} == {("critical", "default", "low")}


@pytest.mark.parametrize("text", ["a:x", "a:0", "a,,b", "a,a"])
def test_bad_queue_specs_get_one_line_errors(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        QueueSpec.parse(text)
    assert "\n" not in str(info.value)


def test_strict_refuses_weights() -> None:
    with pytest.raises(ConfigurationError, match="--strict"):
        QueueSpec.parse("a:2,b", strict=True)
