"""Working hours: when a person works, in their own time zone, and due times counted in working time.

A schedule is a set of local wall-clock intervals per ISO weekday (1 = Monday ... 7 = Sunday) in an IANA time zone,
plus days off (holidays). Each local day's intervals become real instants through ``quiet_hours.local_instant``
(a skipped wall time is the moment of the change, a repeated one its first occurrence), so a working day that
crosses a DST change is as long in real time as the clock on the wall says it is (minus a skipped hour).

``due_in_working_hours(start, hours, schedule)`` walks the working intervals from ``start`` and spends ``hours`` of
working time: 4 working hours from Friday 16:00 in a Monday-Friday 9-17 schedule is Monday 12:00.
``working_time_between(start, end, schedule)`` measures working time (e.g. a response time). Pure: no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from suppilo.engine.quiet_hours import QuietHoursError, local_instant, zone

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SEARCH_DAYS = 3 * 366


class WorkingHoursError(ValueError):
    """An invalid working-hours setting; ``path`` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


Interval = tuple[time, time | None]  # end None means midnight at the end of the day (24:00)


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """Local working intervals per ISO weekday (index 0 = Monday) in ``timezone``; ``holidays`` are days off."""

    timezone: str
    days: tuple[tuple[Interval, ...], ...]
    holidays: frozenset[date] = field(default_factory=frozenset)

    def as_dict(self) -> dict[str, Any]:
        """The canonical JSON form (what ``parse_working_hours`` reads back)."""
        return {
            "timezone": self.timezone,
            "days": {
                DAY_NAMES[i]: [[_fmt(a), _fmt(b)] for a, b in intervals]
                for i, intervals in enumerate(self.days)
                if intervals
            },
            "holidays": sorted(d.isoformat() for d in self.holidays),
        }


def _fmt(value: time | None) -> str:
    return "24:00" if value is None else value.strftime("%H:%M")


def _hhmm(value: object, path: str) -> time | None:
    if not isinstance(value, str) or not _HHMM.match(value):
        raise WorkingHoursError(path, f"{value!r} is not a time HH:MM (00:00-24:00)")
    if value == "24:00":
        return None
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _minutes(value: time | None) -> int:
    return 24 * 60 if value is None else value.hour * 60 + value.minute


def _intervals(value: object, path: str) -> tuple[Interval, ...]:
    if not isinstance(value, list):
        raise WorkingHoursError(path, "give a list of [start, end] intervals")
    out: list[Interval] = []
    for i, item in enumerate(value):
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise WorkingHoursError(f"{path}.{i}", "an interval is [start, end], e.g. ['09:00', '17:00']")
        start = _hhmm(item[0], f"{path}.{i}.0")
        end = _hhmm(item[1], f"{path}.{i}.1")
        if start is None:
            raise WorkingHoursError(f"{path}.{i}.0", "an interval cannot start at 24:00")
        if _minutes(end) <= _minutes(start):
            raise WorkingHoursError(f"{path}.{i}.1", "the end must come after the start (same day)")
        if out and _minutes(start) < _minutes(out[-1][1]):
            raise WorkingHoursError(f"{path}.{i}.0", "intervals must be in order and must not overlap")
        out.append((start, end))
    return tuple(out)


def parse_working_hours(value: object, *, default_timezone: str = "UTC") -> WorkingHours:
    """Read a schedule. Two forms (paths in errors are relative to the setting):

    - simple: ``{"timezone": "Europe/Helsinki", "weekdays": [1, 2, 3, 4, 5], "start": "09:00", "end": "17:00"}``
    - per day: ``{"timezone": ..., "days": {"mon": [["08:00", "12:00"], ["13:00", "16:00"]], ...}}``

    Both take ``"holidays": ["2026-12-24", ...]``. Without ``timezone`` the default is used."""
    if not isinstance(value, Mapping):
        raise WorkingHoursError("", "working hours are an object")
    known = {"timezone", "weekdays", "start", "end", "days", "holidays"}
    for key in value:
        if key not in known:
            raise WorkingHoursError(str(key), f"unknown field {key!r}; known: {', '.join(sorted(known))}")
    tz_name = value.get("timezone") or default_timezone
    if not isinstance(tz_name, str):
        raise WorkingHoursError("timezone", "give an IANA time zone name")
    try:
        zone(tz_name)
    except QuietHoursError as exc:
        raise WorkingHoursError("timezone", exc.message) from exc
    days: list[tuple[Interval, ...]] = [() for _ in range(7)]
    if "days" in value:
        if any(k in value for k in ("weekdays", "start", "end")):
            raise WorkingHoursError("days", "give either days or weekdays/start/end, not both")
        spec = value["days"]
        if not isinstance(spec, Mapping) or not spec:
            raise WorkingHoursError("days", "give intervals for at least one day, e.g. {'mon': [['09:00', '17:00']]}")
        for name, intervals in spec.items():
            if name not in DAY_NAMES:
                raise WorkingHoursError(f"days.{name}", f"{name!r} is not one of {', '.join(DAY_NAMES)}")
            days[DAY_NAMES.index(name)] = _intervals(intervals, f"days.{name}")
    else:
        weekdays = value.get("weekdays", [1, 2, 3, 4, 5])
        if not isinstance(weekdays, list) or not weekdays:
            raise WorkingHoursError("weekdays", "give ISO weekdays 1 (Monday) to 7 (Sunday)")
        start = _hhmm(value.get("start", "09:00"), "start")
        end = _hhmm(value.get("end", "17:00"), "end")
        if start is None:
            raise WorkingHoursError("start", "the working day cannot start at 24:00")
        if _minutes(end) <= _minutes(start):
            raise WorkingHoursError("end", "the end must come after the start")
        for i, day in enumerate(weekdays):
            if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 7:
                raise WorkingHoursError(f"weekdays.{i}", f"{day!r} is not an ISO weekday 1-7")
            days[day - 1] = ((start, end),)
    if not any(days):
        raise WorkingHoursError("days", "a schedule needs at least one working interval")
    holidays: set[date] = set()
    raw = value.get("holidays", [])
    if not isinstance(raw, list):
        raise WorkingHoursError("holidays", "give a list of dates YYYY-MM-DD")
    for i, item in enumerate(raw):
        try:
            holidays.add(date.fromisoformat(item) if isinstance(item, str) else date.fromisoformat(""))
        except ValueError as exc:
            raise WorkingHoursError(f"holidays.{i}", f"{item!r} is not a date YYYY-MM-DD") from exc
    return WorkingHours(timezone=tz_name, days=tuple(days), holidays=frozenset(holidays))


def _day_intervals(day: date, schedule: WorkingHours, tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    if day in schedule.holidays:
        return []
    out = []
    for start, end in schedule.days[day.weekday()]:
        a = local_instant(day, start, tz)
        b = local_instant(day + timedelta(days=1), time(0), tz) if end is None else local_instant(day, end, tz)
        if b > a:
            out.append((a, b))
    return out


def working_intervals(start: datetime, schedule: WorkingHours) -> Iterator[tuple[datetime, datetime]]:
    """Working intervals (aware UTC) from ``start`` on, in order; the first may begin at ``start``. Stops after
    ``MAX_SEARCH_DAYS`` local days."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    tz = zone(schedule.timezone)
    day = start.astimezone(tz).date() - timedelta(days=1)  # an interval of the day before may still run
    for _ in range(MAX_SEARCH_DAYS):
        for a, b in _day_intervals(day, schedule, tz):
            if b <= start:
                continue
            yield (max(a, start.astimezone(UTC)), b)
        day += timedelta(days=1)


def due_in_working_hours(
    start: datetime, hours: float | timedelta, schedule: WorkingHours | Mapping[str, Any]
) -> datetime:
    """The instant (aware UTC) at which ``hours`` of working time have passed since ``start`` in ``schedule``
    (a ``WorkingHours`` or its JSON form). Zero hours from outside working time is the next start of work."""
    if not isinstance(schedule, WorkingHours):
        schedule = parse_working_hours(schedule)
    left = hours if isinstance(hours, timedelta) else timedelta(hours=hours)
    if left < timedelta(0):
        raise ValueError("hours must not be negative")
    for a, b in working_intervals(start, schedule):
        if b - a >= left:
            return a + left
        left -= b - a
    raise ValueError(f"no working time within {MAX_SEARCH_DAYS} days (check the schedule and holidays)")


def working_time_between(start: datetime, end: datetime, schedule: WorkingHours) -> timedelta:
    """Working time between two instants (zero when ``end`` is not after ``start``)."""
    total = timedelta(0)
    if end <= start:
        return total
    for a, b in working_intervals(start, schedule):
        if a >= end:
            break
        total += min(b, end) - a
    return total


def is_working_time(at: datetime, schedule: WorkingHours) -> bool:
    """Whether ``at`` falls inside a working interval."""
    for a, _b in working_intervals(at, schedule):
        return a <= at.astimezone(UTC)
    return False


def default_schedule(tz_name: str, weekdays: Sequence[int] = (1, 2, 3, 4, 5)) -> WorkingHours:
    """Monday-Friday 09:00-17:00 (or ``weekdays``) in ``tz_name``."""
    return parse_working_hours({"timezone": tz_name, "weekdays": list(weekdays), "start": "09:00", "end": "17:00"})
