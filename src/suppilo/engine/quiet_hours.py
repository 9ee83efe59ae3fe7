"""Quiet hours: a daily window of local wall-clock time in which marketing mail waits.

A window ``start``-``end`` (``"21:00"``-``"08:00"``) is read in a time zone; it crosses midnight when ``start`` is
later than ``end``. Each local day ``d`` has one quiet interval of real time, from ``start`` on ``d`` to ``end`` on
``d`` (or on ``d + 1`` when the window crosses midnight). Wall-clock times are turned into instants with these rules:

- a time that does not exist (skipped on a spring-forward day) moves forward to the first valid instant, which is the
  moment of the change (``03:30`` in Helsinki on 2024-03-31 becomes ``04:00`` EEST, 01:00 UTC);
- a time that exists twice (repeated on a fall-back day) is its first occurrence (the summer-time one).

So on a fall-back day the quiet period ends at the first ``end`` and the repeated hour after it is not quiet; on a
spring-forward day the window is an hour shorter in real time. Pure: the caller passes ``now`` and the zone name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class QuietHoursError(ValueError):
    """An invalid quiet-hours setting; ``path`` names the field (relative to the setting)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily quiet window of local wall-clock time, ``start`` inclusive, ``end`` exclusive."""

    start: time
    end: time

    def as_dict(self) -> dict[str, str]:
        """The setting's JSON form."""
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")}


def _parse_hhmm(value: object, path: str) -> time:
    if not isinstance(value, str) or not _HHMM.match(value):
        raise QuietHoursError(path, "a time of day as HH:MM (00:00-23:59) is required")
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def parse_quiet_hours(value: object) -> QuietHours:
    """``{"start": "HH:MM", "end": "HH:MM"}`` as a window; raises QuietHoursError with the field path."""
    if not isinstance(value, dict):
        raise QuietHoursError("", 'quiet hours are an object like {"start": "21:00", "end": "08:00"}')
    unknown = sorted(str(k) for k in value if k not in ("start", "end"))
    if unknown:
        raise QuietHoursError(unknown[0], "unknown field (allowed: start, end)")
    if "start" not in value:
        raise QuietHoursError("start", "start is required")
    if "end" not in value:
        raise QuietHoursError("end", "end is required")
    start = _parse_hhmm(value["start"], "start")
    end = _parse_hhmm(value["end"], "end")
    if start == end:
        raise QuietHoursError("end", "end must differ from start")
    return QuietHours(start, end)


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raises QuietHoursError when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise QuietHoursError("timezone", f"{name!r} is not an IANA time zone") from exc


def local_instant(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The instant (aware UTC) of local wall time ``wall`` on ``day`` in ``tz``: the first occurrence of a repeated
    time, the moment of the change for a skipped one."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return first.astimezone(UTC)
    # Skipped (a gap): fold=0 reads it with the offset before the change, fold=1 with the offset after it, and
    # the change lies between the two readings. Find it to the second.
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    if high < low:
        low, high = high, low
    before = low.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        mid = mid.replace(microsecond=0)
        if mid <= low:
            mid = low + timedelta(seconds=1)
        if mid.astimezone(tz).utcoffset() == before:
            low = mid
        else:
            high = mid
    return high


def _interval(day: date, window: QuietHours, tz: ZoneInfo) -> tuple[datetime, datetime]:
    start = local_instant(day, window.start, tz)
    end_day = day if window.start < window.end else day + timedelta(days=1)
    return start, local_instant(end_day, window.end, tz)


def quiet_until(now: datetime, tz_name: str, window: QuietHours) -> datetime | None:
    """When the quiet period that ``now`` falls in ends (aware UTC), or None when ``now`` is not quiet."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tz = zone(tz_name)
    today = now.astimezone(tz).date()
    intervals = [_interval(today + timedelta(days=offset), window, tz) for offset in (-2, -1, 0, 1)]
    until: datetime | None = None
    moment = now
    # Adjacent intervals can touch (a window of almost 24 hours across a change): follow them to the real end.
    for _ in range(len(intervals)):
        inside = [end for start, end in intervals if start <= moment < end]
        if not inside:
            break
        until = moment = max(inside)
    return until


def next_allowed(now: datetime, tz_name: str, window: QuietHours | None) -> datetime:
    """The first instant at or after ``now`` outside quiet hours in ``tz_name`` (``now`` itself when not quiet)."""
    if window is None:
        return now
    until = quiet_until(now, tz_name, window)
    return now if until is None else until
