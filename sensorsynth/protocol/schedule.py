"""The schedule of an installation: which scene plays at a moment, and when the next change comes.

Pure: :func:`scene_at` takes the schedule and the time (an aware ``datetime``) and gives a :class:`Moment`
(the scene now, the next change and its time). No clock inside, so the tests can stand anywhere in time: across
midnight, across the changes of daylight-saving time, across the end of a week or a year.

The schedule is written in wall-clock time of one named time zone (``zoneinfo``): opening hours per weekday
(periods ``"10:00-18:00"``; a period may run past midnight, ``"20:00-02:00"``, and then belongs to the day it
started on), one scene during opening hours (``open``, per weekday in ``days``, per period in its ``scene``),
one outside them (``closed``: the quiet period, e.g. silence at night), and date ranges that override a day's
hours and scenes (holidays, a different programme for a week).

Why wall-clock boundaries and not "evaluate the rule at an instant": around a change of daylight-saving time a
wall-clock time can be missing (spring: 02:30 does not exist) or happen twice (autumn: 02:30 comes twice). Each
boundary of the rule (a period's start or end, midnight) is placed once on the time line: at its first
occurrence when it happens twice, at the moment the clocks jump when it falls in the gap. A change therefore
happens exactly once, never twice in a repeated hour and never skipped in a missing one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DateRule", "Moment", "Period", "Schedule", "WEEKDAYS", "scene_at", "changes"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
SCENE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_PERIODS = 16  # per day: more is a mistake, not an opening pattern
MAX_DATE_RULES = 512
HORIZON_DAYS = 400  # how far ahead the next change is looked for (a year and a bit: yearly closures included)
DAY = 86400  # seconds
_TIME = r"(\d{1,2}):(\d{2})(?::(\d{2}))?"
_PERIOD = re.compile(rf"^\s*({_TIME})\s*-\s*({_TIME})\s*$")


def _second(text: str, end: bool) -> int:
    """``HH:MM`` or ``HH:MM:SS`` → seconds after midnight (``24:00`` only as an end)."""
    m = re.fullmatch(_TIME, text.strip())
    if not m:
        raise ValueError(f"period time {text[:16]!r} is not HH:MM (or HH:MM:SS)")
    h, mi, se = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if mi > 59 or se > 59 or h > 24 or (h == 24 and (mi or se or not end)):
        raise ValueError(f"period time {text!r} is not a time of day (00:00 to 23:59; 24:00 only as an end)")
    return (h * 60 + mi) * 60 + se


class Period(BaseModel):
    """Open from ``start`` to ``end`` (``"HH:MM"`` or ``"HH:MM:SS"``; ``end`` may be ``"24:00"``; an end before
    the start runs past midnight). ``scene``: what plays in it (default: the day's open scene)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: str = Field(max_length=8)
    end: str = Field(max_length=8)
    scene: str | None = Field(None, pattern=SCENE_NAME)

    @model_validator(mode="after")
    def _times(self) -> "Period":
        a, b = self.seconds  # raises for a bad time
        if a == b:
            raise ValueError(f"period {self.start}-{self.end} is empty (a whole day is 00:00-24:00)")
        return self

    @property
    def seconds(self) -> tuple[int, int]:
        """(start, end) in seconds after midnight; end ≤ start means the period runs past midnight."""
        return _second(self.start, False), _second(self.end, True)


def _period(value: object) -> object:
    """``"10:00-18:00"`` is short for ``{start = "10:00", end = "18:00"}``."""
    if isinstance(value, str):
        m = _PERIOD.match(value)
        if not m or len(value) > 32:
            raise ValueError(f"period {value[:32]!r} is not HH:MM-HH:MM")
        return {"start": m.group(1), "end": m.group(5)}
    return value


Periods = list[Period]


class _PeriodsModel(BaseModel):
    @field_validator("hours", mode="before", check_fields=False)
    @classmethod
    def _short_periods(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: [_period(p) for p in v] if isinstance(v, list) else v for k, v in value.items()}
        if isinstance(value, list):
            return [_period(p) for p in value]
        return value


class DateRule(_PeriodsModel):
    """Days ``from`` … ``to`` (inclusive, wall-clock dates): other hours (``hours``; ``[]`` = closed all day),
    another open scene (``scene``) or another quiet scene (``closed``). A later rule wins over an earlier one."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    first: date = Field(alias="from")
    last: date | None = Field(None, alias="to")
    scene: str | None = Field(None, pattern=SCENE_NAME)
    closed: str | None = Field(None, pattern=SCENE_NAME)
    hours: Periods | None = Field(None, max_length=MAX_PERIODS)

    @model_validator(mode="after")
    def _order(self) -> "DateRule":
        if self.last is not None and self.last < self.first:
            raise ValueError(f"date range {self.first} to {self.last} ends before it starts")
        return self

    def covers(self, day: date) -> bool:
        return self.first <= day <= (self.last or self.first)


class Schedule(_PeriodsModel):
    """Opening hours per weekday in one time zone, the scene while open and the one while closed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    timezone: str = Field("UTC", max_length=64)
    open: str = Field(pattern=SCENE_NAME)
    closed: str = Field(pattern=SCENE_NAME)
    hours: dict[Weekday, Periods] = Field(default_factory=dict)
    days: dict[Weekday, str] = Field(default_factory=dict)
    dates: list[DateRule] = Field(default_factory=list, max_length=MAX_DATE_RULES)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value[:64]!r} (an IANA name such as Europe/Paris, or UTC)") from None
        return value

    @field_validator("hours")
    @classmethod
    def _bounded(cls, value: dict[str, Periods]) -> dict[str, Periods]:
        for day, periods in value.items():
            if len(periods) > MAX_PERIODS:
                raise ValueError(f"{day}: at most {MAX_PERIODS} periods a day")
        return value

    @field_validator("days")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for day, name in value.items():
            if not re.match(SCENE_NAME, name):
                raise ValueError(f"{day}: {name[:64]!r} is not a scene name")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def scene_names(self) -> set[str]:
        """Every scene this schedule may play (each must exist in the file)."""
        names = {self.open, self.closed, *self.days.values()}
        for periods in self.hours.values():
            names |= {p.scene for p in periods if p.scene}
        for rule in self.dates:
            names |= {n for n in (rule.scene, rule.closed) if n}
            names |= {p.scene for p in rule.hours or () if p.scene}
        return names


@dataclass(frozen=True)
class Moment:
    """What the schedule says at a moment: ``scene`` now; ``next_scene`` from ``next_at`` on (both None when
    nothing changes within :data:`HORIZON_DAYS`)."""

    scene: str
    next_scene: str | None
    next_at: datetime | None


# ------------------------------------------------------------------------------------------- the rule in wall time
def _rule(schedule: Schedule, day: date) -> DateRule | None:
    for rule in reversed(schedule.dates):  # the last rule that covers the day wins
        if rule.covers(day):
            return rule
    return None


def _periods(schedule: Schedule, day: date) -> list[tuple[int, int, str | None]]:
    rule = _rule(schedule, day)
    periods = rule.hours if rule is not None and rule.hours is not None else schedule.hours.get(WEEKDAYS[day.weekday()], [])
    return [(*p.seconds, p.scene) for p in periods]


def _open_scene(schedule: Schedule, day: date, period_scene: str | None) -> str:
    if period_scene:
        return period_scene
    rule = _rule(schedule, day)
    if rule is not None and rule.scene:
        return rule.scene
    return schedule.days.get(WEEKDAYS[day.weekday()], schedule.open)


def _closed_scene(schedule: Schedule, day: date) -> str:
    rule = _rule(schedule, day)
    return rule.closed if rule is not None and rule.closed else schedule.closed


def scene_of_wall(schedule: Schedule, day: date, second: int) -> str:
    """The scene at wall-clock ``second`` (0..86399) of ``day``: an open period of the day (the first that
    holds), else one of the day before that runs past midnight, else the day's quiet scene."""
    for start, end, scene in _periods(schedule, day):
        if (start <= second < end) if start < end else second >= start:
            return _open_scene(schedule, day, scene)
    before = day - timedelta(days=1)
    for start, end, scene in _periods(schedule, before):
        if end <= start and second < end:
            return _open_scene(schedule, before, scene)
    return _closed_scene(schedule, day)


def _boundaries(schedule: Schedule, day: date) -> list[int]:
    """Wall-clock seconds of ``day`` where the scene may change: midnight, each period's start and end, and the
    end of a period of the day before that ran past midnight."""
    marks = {0}
    for start, end, _ in _periods(schedule, day):
        marks.add(start)
        marks.add(end % DAY if end <= start or end == DAY else end)
    for start, end, _ in _periods(schedule, day - timedelta(days=1)):
        if end <= start:
            marks.add(end)
    return sorted(m for m in marks if 0 <= m < DAY)


# ------------------------------------------------------------------------------------------- wall time → instants
def _local(t: datetime, zone: ZoneInfo) -> datetime:
    return t.astimezone(zone).replace(tzinfo=None)


def instant(zone: ZoneInfo, day: date, second: int) -> datetime:
    """The UTC instant of a wall-clock time: its first occurrence when the clocks go back (it happens twice),
    the moment the clocks jump when it falls in their gap (it never happens)."""
    wall = datetime.combine(day, time()) + timedelta(seconds=second)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if _local(first, zone) == wall:
        return first
    # in the gap: one reading falls before the jump, the other after it; the jump is the first whole second
    # whose wall time is at or past `wall` (zone transitions fall on whole seconds)
    a = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    b = int(first.timestamp()) + 1
    lo, hi = min(a, b), max(a, b)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _local(datetime.fromtimestamp(mid, timezone.utc), zone) >= wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, timezone.utc)


def _marks(schedule: Schedule, zone: ZoneInfo, first_day: date):
    """(day, second, scene) of every boundary from ``first_day`` on, in time order, lazily."""
    day = first_day
    for _ in range(HORIZON_DAYS + 3):
        for second in _boundaries(schedule, day):
            yield day, second, scene_of_wall(schedule, day, second)
        day += timedelta(days=1)


def scene_at(schedule: Schedule, now: datetime) -> Moment:
    """The scene at ``now`` (an aware datetime) and the next change: the scene of the last boundary at or
    before ``now``, and the first later boundary whose scene differs."""
    if now.tzinfo is None:
        raise ValueError("scene_at needs an aware datetime (a time zone), not a naive one")
    zone = schedule.zone
    today = _local(now, zone).date()
    current: str | None = None
    marks = _marks(schedule, zone, today - timedelta(days=1))
    pending = None
    for day, second, scene in marks:
        if day > today + timedelta(days=1):
            pending = (day, second, scene)
            break
        if current is not None and scene == current:
            continue  # no change here: no need to place it on the time line
        at = instant(zone, day, second)
        if at <= now:
            current = scene
        else:
            pending = (day, second, scene)
            break
    assert current is not None  # the day before's midnight is always before now
    stream = _chain([pending] if pending is not None else [], marks)
    item = next(stream, None)
    while item is not None:
        day, second, scene = item
        item = next(stream, None)
        if scene == current:
            continue
        at = instant(zone, day, second)
        # boundaries on the same instant (a period inside the hour the clocks skip): the last one holds
        while item is not None and instant(zone, item[0], item[1]) == at:
            scene = item[2]
            item = next(stream, None)
        if scene != current:
            return Moment(current, scene, at)
    return Moment(current, None, None)


def _chain(first: list, rest):
    yield from first
    yield from rest


def changes(schedule: Schedule, now: datetime, count: int = 5) -> list[tuple[datetime, str]]:
    """The next ``count`` changes from ``now``: [(instant, scene)], for ``sensorsynth scenes check``."""
    out: list[tuple[datetime, str]] = []
    t = now
    for _ in range(count):
        m = scene_at(schedule, t)
        if m.next_at is None or m.next_scene is None:
            break
        out.append((m.next_at, m.next_scene))
        t = m.next_at
    return out

