"""Schedules without a store: reading expressions, when ticks fall (time zones, DST, intervals)
and what the misfire policy makes of ticks that fell due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conveyor import Conveyor
from conveyor.cron import CronError, ScheduleState, TickStatus, Timing, plan
from conveyor.models import NewJob

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone))  # type: ignore[misc]


@pytest.mark.parametrize(("expression", "field"), [
    ("61 * * * *", "minute field '61'"), ("* 25 * * *", "hour field '25'"),
    ("* * 32 * *", "day of month field '32'"), ("* * * 13 *", "month field '13'"),
    ("* * * * FUNDAY", "day of week field 'FUNDAY'"), ("* * * * * 75", "second field '75'"),
])
def test_a_malformed_expression_names_its_field(expression: str, field: str) -> None:
    with pytest.raises(CronError) as e:
        Timing.of(expression, None, "UTC")
    assert field in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("bad", ["", "* * *", "* * * * * * *", "@fortnightly", "* * 31 2 *"])
def test_other_bad_expressions_are_one_line_errors(bad: str) -> None:
    with pytest.raises(CronError) as e:
        Timing.of(bad, None, "UTC")
    assert "\n" not in str(e.value)


def test_bad_time_zone_interval_and_policy_fail_at_definition() -> None:
    app = Conveyor("sqlite:///unused.db")
    with pytest.raises(CronError, match="unknown time zone"):
        app.cron("* * * * *", timezone="Mars/Olympus")
    with pytest.raises(CronError, match="every="):
        app.cron(every=timedelta(seconds=0.5))
    with pytest.raises(CronError, match="misfire="):
        app.cron("* * * * *", misfire="sometimes")(lambda: None)
    assert not app.store_is_open  # defining schedules opens nothing


def test_decorator_forms_and_names() -> None:
    app = Conveyor("sqlite:///unused.db")

    @app.cron("0 9 * * MON", timezone="Europe/Berlin")
    def weekly() -> None: ...

    @app.cron(every=timedelta(seconds=30), name="half-minute", args=[2], queue="fast")
    @app.job(queue="slow")
    def sync(n: int = 1) -> int:
        return n

    every_hour = app.cron("@hourly", sync, args=[5], name="hourly-sync")
    assert weekly.enqueue  # a plain function became a job
    assert app.schedules.names() == ["half-minute", "hourly-sync", weekly.name]
    job = every_hour.new_job()
    assert (job.name, job.args, job.queue) == (sync.name, "[5]", "slow")
    assert app.schedules.get("half-minute").new_job().queue == "fast"  # type: ignore[union-attr]
    with pytest.raises(CronError, match="two schedules are named"):
        app.cron("@daily", sync, name="hourly-sync")
    with pytest.raises(TypeError):
        app.cron("@daily", sync, args=[object()], name="bad-args")  # cannot be encoded


def test_seconds_field_and_aliases() -> None:
    assert Timing.of("* * * * * 15", None, "UTC").next_after(T0) == T0 + timedelta(seconds=15)
    assert Timing.of("@hourly", None, "UTC").next_after(T0) == T0 + timedelta(hours=1)


def test_intervals_fall_on_multiples_since_the_epoch() -> None:
    timing = Timing.of(None, timedelta(seconds=7), "Europe/Berlin")
    tick = timing.next_after(T0)
    assert tick.timestamp() % 7 == 0 and timedelta(0) < tick - T0 <= timedelta(seconds=7)
    assert timing.next_after(tick) == tick + timedelta(seconds=7)
    assert Timing.from_description(timing.describe(), "UTC").every == 7


@pytest.mark.parametrize(("zone", "day", "gap_end"), [
    ("Europe/Berlin", (2026, 3, 29), (3, 0)), ("America/New_York", (2026, 3, 8), (3, 0)),
])
def test_a_time_skipped_in_spring_fires_once_at_the_next_valid_instant(
    zone: str, day: tuple[int, int, int], gap_end: tuple[int, int]
) -> None:
    timing = Timing.of("30 2 * * *", None, zone)
    before = local(zone, *day, 0, 0)
    ticks = timing.ticks(before - timedelta(days=1), before + timedelta(days=2), 10)
    days = [t.astimezone(ZoneInfo(zone)) for t in ticks]
    assert [(d.day, d.hour, d.minute) for d in days] == [
        (day[2] - 1 if day[2] > 1 else 0, 2, 30), (day[2], *gap_end), (day[2] + 1, 2, 30)]


@pytest.mark.parametrize(("zone", "day", "hour"), [
    ("Europe/Berlin", (2026, 10, 25), 2), ("America/New_York", (2026, 11, 1), 1),
])
def test_a_time_repeated_in_autumn_fires_once(zone: str, day: tuple[int, int, int], hour: int) -> None:
    tz = ZoneInfo(zone)
    timing = Timing.of(f"30 {hour} * * *", None, zone)
    start = local(zone, *day, 0, 0).astimezone(UTC)
    ticks = timing.ticks(start, start + timedelta(hours=25), 10)  # the whole 25-hour day
    assert len(ticks) == 1 and ticks[0].astimezone(tz).fold == 0
    assert ticks[0].astimezone(tz).hour == hour
    every_quarter = Timing.of("*/15 * * * *", None, zone)
    ticks = every_quarter.ticks(start, start + timedelta(hours=4), 100)
    walls = [t.astimezone(tz).replace(tzinfo=None) for t in ticks]
    assert len(walls) == len(set(walls))  # each wall-clock time once, though 4 h went by
    assert len(ticks) == 4 * 3  # 00:15 .. 03:00 on the wall clock, the repeated hour once


def state(**changes: object) -> ScheduleState:
    base = dict(name="s", description="* * * * *", timezone="UTC", job=NewJob(name="j"),
                first_seen_at=T0, seen_at=T0, last_tick_at=None, paused=False, resumed_at=None)
    base.update(changes)
    return ScheduleState(**base)  # type: ignore[arg-type]


def schedule(**options: object) -> object:
    app = Conveyor("sqlite:///unused.db")

    @app.cron(every=timedelta(seconds=1), name="s", **options)  # type: ignore[arg-type]
    def job() -> None: ...

    return app.schedules.get("s")


def statuses(ticks: list) -> list[str]:  # type: ignore[type-arg]
    return [str(t.status)[0] for t in ticks]  # f(ired) s(kipped) m(issed)


def test_ticks_count_from_the_first_sighting_and_on_time_ones_fire() -> None:
    s = schedule(misfire_grace=5)
    assert plan(s, state(), T0) == []  # type: ignore[arg-type]
    assert statuses(plan(s, state(), T0 + timedelta(seconds=3))) == list("fff")  # type: ignore[arg-type]
    done = state(last_tick_at=T0 + timedelta(seconds=3))
    assert plan(s, done, T0 + timedelta(seconds=3.5)) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(("policy", "expected"), [
    ("skip", "mmmmmmmfff"), ("run_once", "mmmmmmffff"), ("catch_up", "mmmmffffff"),
])
def test_misfire_policies(policy: str, expected: str) -> None:
    s = schedule(misfire=policy, misfire_grace=2, max_catch_up=3)
    ticks = plan(s, state(), T0 + timedelta(seconds=10))  # type: ignore[arg-type]
    assert "".join(statuses(ticks)) == expected
    assert [t.fire_at for t in ticks] == [T0 + timedelta(seconds=i) for i in range(1, 11)]


def test_paused_ticks_are_skipped_and_resuming_skips_those_before_it() -> None:
    s = schedule(misfire_grace=60)
    paused = plan(s, state(paused=True), T0 + timedelta(seconds=3))  # type: ignore[arg-type]
    assert [t.status for t in paused] == [TickStatus.SKIPPED] * 3
    resumed = state(resumed_at=T0 + timedelta(seconds=2))
    assert statuses(plan(s, resumed, T0 + timedelta(seconds=4))) == list("ssff")  # type: ignore[arg-type]


@pytest.mark.parametrize(("policy", "runs"), [("skip", 0), ("run_once", 1), ("catch_up", 3)])
def test_a_backlog_longer_than_one_pass_runs_as_the_policy_says_once(policy: str, runs: int) -> None:
    s = schedule(misfire=policy, misfire_grace=2, max_catch_up=3)
    now, current, fired, recorded = T0 + timedelta(seconds=25), state(), 0, 0
    while ticks := plan(s, current, now, limit=10):  # type: ignore[arg-type]
        fired += sum(t.status is TickStatus.FIRED and t.reason is not None for t in ticks)
        recorded += len(ticks)
        current = state(last_tick_at=ticks[-1].fire_at)
    assert recorded == 25 and fired == runs  # late runs; the last 3 ticks are on time
