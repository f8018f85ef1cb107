"""Cron through the Python API and conveyor.testing, on both stores: frozen time steps through
ticks (DST days in Europe/Berlin and America/New_York included), drain() runs them, misfire
policies after a jump, and pause / resume / run now / history / orphaned on app.schedules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conveyor import Conveyor
from conveyor.cron import ScheduleDef, ScheduleStatus, TickStatus, UnknownSchedule
from conveyor.errors import InvalidState
from conveyor.models import NewJob
from conveyor.testing import drain, isolated

runs: list[str] = []


def make_app() -> Conveyor:
    return Conveyor("sqlite:///unused-by-tests.db")


@pytest.fixture(autouse=True)
def clear_runs() -> Iterator[None]:
    runs.clear()
    yield
    runs.clear()


def local_walls(app: Conveyor, name: str, zone: str) -> list[tuple[int, int, int, int]]:
    """(day, hour, minute, fold) on the zone's wall clock of each fired tick, oldest first."""
    tz = ZoneInfo(zone)
    ticks = reversed(app.schedules.history(name, limit=1000))
    walls = [t.fire_at.astimezone(tz) for t in ticks if t.status is TickStatus.FIRED]
    return [(w.day, w.hour, w.minute, w.fold) for w in walls]


@pytest.mark.parametrize(("zone", "start", "at", "expected"), [
    # spring forward: 02:30 does not exist that day, so it fires once at 03:00
    ("Europe/Berlin", datetime(2026, 3, 28, 12), "30 2 * * *",
     [(29, 3, 0, 0), (30, 2, 30, 0), (31, 2, 30, 0)]),
    ("America/New_York", datetime(2026, 3, 7, 12), "30 2 * * *",
     [(8, 3, 0, 0), (9, 2, 30, 0), (10, 2, 30, 0)]),
    # fall back: 02:30 (Berlin) and 01:30 (New York) occur twice that day, and fire once
    ("Europe/Berlin", datetime(2026, 10, 24, 12), "30 2 * * *",
     [(25, 2, 30, 0), (26, 2, 30, 0), (27, 2, 30, 0)]),
    ("America/New_York", datetime(2026, 10, 31, 12), "30 1 * * *",
     [(1, 1, 30, 0), (2, 1, 30, 0), (3, 1, 30, 0)]),
])
def test_dst_days_with_frozen_time(
    store_url: str, zone: str, start: datetime, at: str, expected: list[tuple[int, ...]]
) -> None:
    app = make_app()

    @app.cron(at, timezone=zone, name="nightly")
    def nightly() -> None:
        runs.append("nightly")

    begin = start.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    with isolated(app, url=store_url, start=begin) as t:
        t.advance(timedelta(days=3))
        assert drain().succeeded == 3
    assert runs == ["nightly"] * 3
    with isolated(app, url=store_url, start=begin) as t:
        t.advance(timedelta(days=3))
        assert local_walls(app, "nightly", zone) == expected


@pytest.mark.parametrize(("zone", "day"), [
    ("Europe/Berlin", datetime(2026, 10, 25)), ("America/New_York", datetime(2026, 11, 1)),
])
def test_every_quarter_hour_through_the_repeated_hour_fires_each_wall_time_once(
    store_url: str, zone: str, day: datetime
) -> None:
    app = make_app()

    @app.cron("*/15 * * * *", timezone=zone, name="quarterly")
    def quarterly() -> None: ...

    begin = day.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    with isolated(app, url=store_url, start=begin) as t:
        t.advance(timedelta(hours=25))  # the whole 25-hour day
        walls = [(h, m) for _, h, m, _ in local_walls(app, "quarterly", zone)]
    # 00:15 .. 23:45 and the next midnight: 96 wall times, each once, in 25 hours
    assert len(walls) == len(set(walls)) == 24 * 4


@pytest.mark.parametrize(("policy", "fired", "missed"), [
    ("skip", 0, 10), ("run_once", 1, 9), ("catch_up", 3, 7),
])
def test_misfire_after_a_jump_no_scheduler_saw(
    store_url: str, policy: str, fired: int, missed: int
) -> None:
    app = make_app()

    @app.cron("* * * * *", name="minutely", misfire=policy, misfire_grace=30, max_catch_up=3)
    def minutely() -> None:
        runs.append("minutely")

    begin = datetime(2026, 3, 2, 9, 0, 10, tzinfo=UTC)
    with isolated(app, url=store_url, start=begin) as t:
        assert t.clock is not None
        t.clock.set(begin + timedelta(minutes=10, seconds=40))  # 10 ticks, all past the grace
        drain()
        history = app.schedules.history("minutely")
    assert len(runs) == fired
    assert [h.status for h in history].count(TickStatus.MISSED) == missed
    assert len(history) == 10 and all(h.reason and "misfire" in h.reason for h in history)


def test_pause_resume_run_history_and_orphans(store_url: str) -> None:
    app = make_app()

    @app.cron("* * * * *", name="minutely")
    def minutely() -> None:
        runs.append("minutely")

    begin = datetime(2026, 3, 2, 9, 0, 10, tzinfo=UTC)
    with isolated(app, url=store_url, start=begin) as t:
        app.schedules.pause("minutely")
        t.advance(timedelta(minutes=3))
        handle = app.schedules.run("minutely")  # paused or not
        drain()
        assert runs == ["minutely"] and handle.status() == "succeeded"
        app.schedules.resume("minutely")
        t.advance(timedelta(minutes=2))
        drain()
        assert runs == ["minutely"] * 3
        history = app.schedules.history("minutely")
        assert [(h.status, h.manual) for h in reversed(history)] == [
            (TickStatus.SKIPPED, False)] * 3 + [(TickStatus.FIRED, True)] + [
            (TickStatus.FIRED, False)] * 2
        assert all(h.outcome == "succeeded" for h in history if h.job_id is not None)
        [info] = app.schedules.list()
        assert info.status is ScheduleStatus.ACTIVE and info.last_outcome == "succeeded"
        assert info.next_run_at == begin.replace(second=0) + timedelta(minutes=6)

        # a schedule the store knows and the code no longer defines: orphaned, never fires
        t.store.cron_register([ScheduleDef("retired", "* * * * *", "UTC", NewJob(name="gone:job"))],
                              now=t.clock.now() if t.clock else None)
        t.advance(timedelta(minutes=5))
        listed = {i.name: i for i in app.schedules.list()}
        assert listed["retired"].status is ScheduleStatus.ORPHANED
        assert listed["retired"].next_run_at is None
        assert app.schedules.history("retired") == []
        with pytest.raises(InvalidState, match="orphaned"):
            app.schedules.run("retired")
        with pytest.raises(UnknownSchedule, match=r"known: .*retired"):
            app.schedules.pause("nope")
        with pytest.raises(UnknownSchedule):
            app.schedules.history("nope")


def test_a_schedule_over_an_existing_job_with_arguments(store_url: str) -> None:
    app = make_app()

    @app.job(queue="reports")
    def report(kind: str) -> None:
        runs.append(kind)

    app.cron("0 * * * *", report, args=["hourly"], name="hourly-report")
    app.cron("0 0 * * *", report, kwargs={"kind": "daily"}, name="daily-report", priority=5)
    begin = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)
    with isolated(app, url=store_url, start=begin) as t:
        t.advance(timedelta(hours=2))
        jobs = t.enqueued(report)
        assert sorted((j.queue, j.priority) for j in jobs) == [
            ("reports", 0), ("reports", 0), ("reports", 5)]
        drain()
    assert sorted(runs) == ["daily", "hourly", "hourly"]
