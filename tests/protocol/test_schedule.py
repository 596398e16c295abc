"""The schedule's pure core: which scene at a moment, and the next change, across midnight, the changes of
daylight-saving time, week and year boundaries, date ranges and periods past midnight."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from sensorsynth.protocol.schedule import Schedule, changes, instant, scene_at

PARIS = ZoneInfo("Europe/Paris")
UTC = timezone.utc


def museum(**extra) -> Schedule:
    """Open 10:00-18:00 Tuesday to Sunday, closed Monday; silence outside the hours."""
    hours = {d: ["10:00-18:00"] for d in ("tue", "wed", "thu", "fri", "sat", "sun")}
    return Schedule.model_validate({"timezone": "Europe/Paris", "open": "day", "closed": "quiet", "hours": hours,
                                    **extra})


def at(y, mo, d, h, mi=0, zone=PARIS, fold=0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=zone, fold=fold)


def test_open_and_closed_within_a_day():
    s = museum()
    m = scene_at(s, at(2026, 12, 8, 9, 59))  # a Tuesday, a minute before opening
    assert (m.scene, m.next_scene, m.next_at) == ("quiet", "day", at(2026, 12, 8, 10).astimezone(UTC))
    m = scene_at(s, at(2026, 12, 8, 10))  # the opening minute itself is open
    assert (m.scene, m.next_scene, m.next_at) == ("day", "quiet", at(2026, 12, 8, 18).astimezone(UTC))
    assert scene_at(s, at(2026, 12, 8, 17, 59)).scene == "day"
    assert scene_at(s, at(2026, 12, 8, 18)).scene == "quiet"


def test_monday_closed_and_the_week_boundary():
    s = museum()
    # Sunday evening → through the closed Monday → Tuesday 10:00
    m = scene_at(s, at(2026, 12, 6, 18, 30))
    assert m.scene == "quiet" and m.next_at == at(2026, 12, 8, 10).astimezone(UTC)
    assert scene_at(s, at(2026, 12, 7, 12)).scene == "quiet", "Monday noon: closed"


def test_across_midnight_and_the_year():
    s = museum()
    m = scene_at(s, at(2026, 12, 31, 23, 59))  # a Thursday night, then Friday 1 January
    assert m.scene == "quiet" and m.next_at == at(2027, 1, 1, 10).astimezone(UTC)


def test_a_period_past_midnight_belongs_to_the_day_it_started():
    s = Schedule.model_validate({"timezone": "UTC", "open": "day", "closed": "quiet",
                                 "hours": {"sat": [{"start": "20:00", "end": "02:00", "scene": "party"}]}})
    sat = date(2026, 12, 5)
    assert sat.weekday() == 5
    assert scene_at(s, datetime(2026, 12, 5, 19, 59, tzinfo=UTC)).scene == "quiet"
    m = scene_at(s, datetime(2026, 12, 5, 23, 0, tzinfo=UTC))
    assert (m.scene, m.next_scene, m.next_at) == ("party", "quiet", datetime(2026, 12, 6, 2, 0, tzinfo=UTC))
    assert scene_at(s, datetime(2026, 12, 6, 1, 59, tzinfo=UTC)).scene == "party", "Sunday 01:59: still Saturday's"
    assert scene_at(s, datetime(2026, 12, 6, 2, 0, tzinfo=UTC)).scene == "quiet"


def test_the_daily_change_and_date_ranges():
    s = museum(days={"sat": "weekend", "sun": "weekend"},
               dates=[{"from": date(2026, 12, 24), "to": date(2026, 12, 26), "hours": ["12:00-16:00"],
                       "scene": "carols"},
                      {"from": date(2026, 12, 31), "hours": []}])
    assert scene_at(s, at(2026, 12, 12, 11)).scene == "weekend"  # Saturday
    assert scene_at(s, at(2026, 12, 11, 11)).scene == "day"  # Friday
    assert scene_at(s, at(2026, 12, 24, 11)).scene == "quiet", "Christmas Eve opens at noon"
    m = scene_at(s, at(2026, 12, 24, 13))
    assert (m.scene, m.next_at) == ("carols", at(2026, 12, 24, 16).astimezone(UTC))
    m = scene_at(s, at(2026, 12, 30, 19))  # New Year's Eve closed: next opening on 1 January
    assert m.next_at == at(2027, 1, 1, 10).astimezone(UTC)


def test_spring_forward_a_change_in_the_missing_hour_happens_when_the_clocks_jump():
    # 29 March 2026, Paris: 02:00 CET jumps to 03:00 CEST; 02:30 never happens
    s = Schedule.model_validate({"timezone": "Europe/Paris", "open": "night-show", "closed": "quiet",
                                 "hours": {"sun": ["02:30-05:00"]}})
    m = scene_at(s, at(2026, 3, 29, 1, 0))
    assert m.scene == "quiet"
    jump = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:00 CET = 01:00 UTC, the moment of the jump
    assert m.next_at == jump and m.next_scene == "night-show"
    assert scene_at(s, jump - timedelta(seconds=1)).scene == "quiet"
    assert scene_at(s, jump).scene == "night-show"
    # and the end, at 05:00 CEST = 03:00 UTC: three real hours after 01:00 CET, two after the jump
    assert scene_at(s, jump).next_at == datetime(2026, 3, 29, 3, 0, tzinfo=UTC)


def test_fall_back_a_change_in_the_repeated_hour_happens_once():
    # 25 October 2026, Paris: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice
    s = Schedule.model_validate({"timezone": "Europe/Paris", "open": "late", "closed": "quiet",
                                 "hours": {"sun": ["00:00-02:30"]}})
    first = at(2026, 10, 25, 2, 30, fold=0).astimezone(UTC)
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    m = scene_at(s, at(2026, 10, 25, 1, 0))
    assert (m.scene, m.next_scene, m.next_at) == ("late", "quiet", first)
    # the second pass through 02:00-02:30 (CET) does not reopen
    second = at(2026, 10, 25, 2, 15, fold=1)
    assert second.astimezone(UTC) == datetime(2026, 10, 25, 1, 15, tzinfo=UTC)
    assert scene_at(s, second).scene == "quiet"
    assert scene_at(s, second).next_at == at(2026, 11, 1, 0, 0).astimezone(UTC)


def test_the_museum_day_is_the_same_wall_clock_on_both_sides_of_a_dst_change():
    s = museum()
    before = scene_at(s, at(2026, 3, 28, 9))  # Saturday, CET
    after = scene_at(s, at(2026, 3, 29, 9))  # Sunday, CEST
    assert before.next_at.astimezone(PARIS).hour == after.next_at.astimezone(PARIS).hour == 10
    assert after.next_at - before.next_at == timedelta(hours=23), "the night of the jump is an hour shorter"


def test_instant_of_missing_and_repeated_wall_times():
    assert instant(PARIS, date(2026, 3, 29), 150 * 60) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert instant(PARIS, date(2026, 10, 25), 150 * 60) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert instant(PARIS, date(2026, 7, 1), 600 * 60) == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def test_no_change_ever_and_a_naive_time():
    s = Schedule.model_validate({"timezone": "UTC", "open": "day", "closed": "quiet"})
    m = scene_at(s, datetime(2026, 12, 3, 12, tzinfo=UTC))
    assert (m.scene, m.next_scene, m.next_at) == ("quiet", None, None)
    with pytest.raises(ValueError, match="aware"):
        scene_at(s, datetime(2026, 12, 3, 12))


def test_changes_lists_the_coming_ones_in_order():
    got = changes(museum(), at(2026, 12, 7, 12), 4)  # Monday noon
    assert [(t.astimezone(PARIS).strftime("%a %H:%M"), n) for t, n in got] == [
        ("Tue 10:00", "day"), ("Tue 18:00", "quiet"), ("Wed 10:00", "day"), ("Wed 18:00", "quiet")]


@pytest.mark.parametrize("bad, words", [
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"hours": {"mon": ["10:00-25:00"]}}, "not a time of day"),
    ({"hours": {"mon": ["10:00-10:00"]}}, "empty"),
    ({"hours": {"mon": ["ten to six"]}}, "HH:MM-HH:MM"),
    ({"hours": {"mon": ["10:00:60-11:00"]}}, "not a time of day"),
    ({"hours": {"funday": ["10:00-18:00"]}}, "funday"),
    ({"hours": {"mon": ["10:00-11:00"] * 17}}, "at most 16"),
    ({"dates": [{"from": "2026-12-26", "to": "2026-12-24"}]}, "ends before it starts"),
])
def test_bad_schedules_are_refused_naming_the_problem(bad, words):
    with pytest.raises(ValidationError, match=words):
        Schedule.model_validate({"open": "day", "closed": "quiet", **bad})


def test_seconds_are_allowed_for_changes_seconds_apart():
    s = Schedule.model_validate({"timezone": "UTC", "open": "day", "closed": "quiet",
                                 "hours": {d: ["12:00:05-12:00:30"] for d in ("mon", "thu")}})
    m = scene_at(s, datetime(2026, 12, 3, 12, 0, 1, tzinfo=UTC))  # a Thursday
    assert (m.scene, m.next_scene, m.next_at) == ("quiet", "day", datetime(2026, 12, 3, 12, 0, 5, tzinfo=UTC))


def test_a_whole_day_open():
    s = Schedule.model_validate({"timezone": "UTC", "open": "day", "closed": "quiet",
                                 "hours": {"thu": ["00:00-24:00"], "fri": ["00:00-24:00"]}})
    m = scene_at(s, datetime(2026, 12, 3, 0, 0, tzinfo=UTC))  # Thursday, midnight
    assert (m.scene, m.next_scene, m.next_at) == ("day", "quiet", datetime(2026, 12, 5, 0, 0, tzinfo=UTC))


from hypothesis import given, settings  # noqa: E402 - the property test's own imports, beside it
from hypothesis import strategies as st  # noqa: E402

ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]


@settings(max_examples=150, deadline=None)
@given(zone=st.sampled_from(ZONES), seconds=st.integers(0, 3 * 365 * 86400),
       start=st.integers(0, 47).map(lambda h: h * 1800), length=st.integers(1, 47).map(lambda h: h * 1800))
def test_the_next_change_is_where_the_scene_changes(zone, seconds, start, length):
    """Anywhere in three years, in zones with DST (Lord Howe's is half an hour), for any period (past midnight
    too): the scene at the next change is the announced one, and a second before it the current one."""
    end = (start + length) % 86400
    period = f"{start // 3600:02d}:{start % 3600 // 60:02d}-{end // 3600:02d}:{end % 3600 // 60:02d}"
    s = Schedule.model_validate({"timezone": zone, "open": "day", "closed": "quiet",
                                 "hours": {d: [period] for d in ("mon", "wed", "thu", "sat", "sun")}})
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    m = scene_at(s, now)
    assert m.next_at is not None and m.next_at > now and m.next_scene != m.scene
    assert scene_at(s, m.next_at).scene == m.next_scene
    if m.next_at - timedelta(seconds=1) > now:
        assert scene_at(s, m.next_at - timedelta(seconds=1)).scene == m.scene
    assert m.next_at - now <= timedelta(days=8), "an open day comes every week"


def test_a_period_inside_the_skipped_hour_never_happens():
    # 29 March 2026, Paris: 02:00-03:00 does not exist; a period 02:00-02:30 that Sunday is skipped
    s = Schedule.model_validate({"timezone": "Europe/Paris", "open": "ghost", "closed": "quiet",
                                 "hours": {"sun": ["02:00-02:30"]}})
    m = scene_at(s, at(2026, 3, 28, 22, 0))
    assert (m.scene, m.next_scene, m.next_at) == ("quiet", "ghost", at(2026, 4, 5, 2, 0).astimezone(UTC))
    assert scene_at(s, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)).scene == "quiet", "at the jump: still quiet"


def _transition_days(zone: ZoneInfo, year: int) -> list[date]:
    day, out = date(year, 1, 1), []
    while day.year == year:
        a = datetime.combine(day, datetime.min.time(), zone).utcoffset()
        b = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone).utcoffset()
        if a != b:
            out.append(day)
        day += timedelta(days=1)
    return out


@pytest.mark.parametrize("name", ["Europe/Paris", "Australia/Lord_Howe"])
def test_every_half_hour_period_on_the_days_the_clocks_change(name):
    """The same property as above, swept over every half-hour start on both days the clocks change (Lord
    Howe's change is half an hour): periods inside the skipped hour, across it, inside the repeated one."""
    zone = ZoneInfo(name)
    days = _transition_days(zone, 2026)
    assert len(days) == 2
    for day in days:
        for start in range(0, 86400, 1800):
            for length in (1800, 5400):
                end = (start + length) % 86400
                period = f"{start // 3600:02d}:{start % 3600 // 60:02d}-{end // 3600:02d}:{end % 3600 // 60:02d}"
                s = Schedule.model_validate({"timezone": name, "open": "day", "closed": "quiet",
                                             "hours": {WEEKDAY[day.weekday()]: [period]}})
                for hour in (0, 1, 2, 3):
                    now = datetime.combine(day, datetime.min.time(), zone).astimezone(UTC) + timedelta(hours=hour)
                    m = scene_at(s, now)
                    assert m.next_at is not None and m.next_at > now, (day, period, now)
                    assert scene_at(s, m.next_at).scene == m.next_scene != m.scene, (day, period, now, m)
                    if m.next_at - timedelta(seconds=1) > now:
                        assert scene_at(s, m.next_at - timedelta(seconds=1)).scene == m.scene, (day, period, now)


WEEKDAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
