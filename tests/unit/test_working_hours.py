"""Working hours: due times counted in working time, weekends, holidays, DST changes, validation with paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from suppilo.engine.working_hours import (
    WorkingHoursError,
    default_schedule,
    due_in_working_hours,
    is_working_time,
    parse_working_hours,
    working_time_between,
)

HEL = ZoneInfo("Europe/Helsinki")
NY = ZoneInfo("America/New_York")


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)


def test_four_hours_from_friday_afternoon_is_monday_noon() -> None:
    schedule = default_schedule("Europe/Helsinki")
    due = due_in_working_hours(local(HEL, 2026, 11, 20, 16, 0), 4, schedule)  # Friday 16:00
    assert due.tzinfo is not None
    assert due.astimezone(HEL) == local(HEL, 2026, 11, 23, 12, 0)  # Monday 12:00


def test_within_the_day_and_from_before_and_after_work() -> None:
    schedule = default_schedule("Europe/Helsinki")
    assert due_in_working_hours(local(HEL, 2026, 11, 23, 10, 0), 4, schedule).astimezone(HEL) == local(
        HEL, 2026, 11, 23, 14, 0
    )
    assert due_in_working_hours(local(HEL, 2026, 11, 23, 6, 30), 1.5, schedule).astimezone(HEL) == local(
        HEL, 2026, 11, 23, 10, 30
    )
    assert due_in_working_hours(local(HEL, 2026, 11, 23, 20, 0), 8, schedule).astimezone(HEL) == local(
        HEL, 2026, 11, 24, 17, 0
    )
    # Zero hours from a Saturday is the next start of work.
    assert due_in_working_hours(local(HEL, 2026, 11, 21, 12, 0), 0, schedule).astimezone(HEL) == local(
        HEL, 2026, 11, 23, 9, 0
    )


def test_more_than_a_week_and_holidays() -> None:
    schedule = parse_working_hours(
        {"timezone": "Europe/Helsinki", "weekdays": [1, 2, 3, 4, 5], "holidays": ["2026-12-24", "2026-12-25"]}
    )
    # Wednesday 23 Dec 16:00 + 2 h: 1 h on Wednesday, Thursday and Friday are holidays, Monday 28 Dec 10:00.
    due = due_in_working_hours(local(HEL, 2026, 12, 23, 16, 0), 2, schedule)
    assert due.astimezone(HEL) == local(HEL, 2026, 12, 28, 10, 0)
    # 45 working hours = 5 days and 5 hours.
    due = due_in_working_hours(local(HEL, 2026, 11, 23, 9, 0), 45, default_schedule("Europe/Helsinki"))
    assert due.astimezone(HEL) == local(HEL, 2026, 11, 30, 14, 0)


def test_split_days_and_a_lunch_break() -> None:
    schedule = parse_working_hours(
        {
            "timezone": "Europe/Riga",
            "days": {"mon": [["08:00", "12:00"], ["13:00", "16:00"]], "sat": [["10:00", "24:00"]]},
        }
    )
    riga = ZoneInfo("Europe/Riga")
    assert due_in_working_hours(local(riga, 2026, 11, 23, 11, 0), 2, schedule).astimezone(riga) == local(
        riga, 2026, 11, 23, 14, 0
    )
    # Monday 15:00 + 3 h: 1 h Monday, then Saturday 10:00 + 2 h.
    assert due_in_working_hours(local(riga, 2026, 11, 23, 15, 0), 3, schedule).astimezone(riga) == local(
        riga, 2026, 11, 28, 12, 0
    )
    assert parse_working_hours(schedule.as_dict()) == schedule


def test_spring_forward_night_shift_is_an_hour_shorter() -> None:
    # A night shift 00:00-06:00 on the day New York skips 02:00-03:00 (8 March 2026) lasts 5 real hours.
    schedule = parse_working_hours({"timezone": "America/New_York", "days": {"sun": [["00:00", "06:00"]]}})
    start = local(NY, 2026, 3, 8, 0, 0)
    due = due_in_working_hours(start, 5, schedule)
    assert due.astimezone(NY) == local(NY, 2026, 3, 8, 6, 0)
    assert due - start.astimezone(UTC) == timedelta(hours=5)
    assert working_time_between(start, local(NY, 2026, 3, 8, 23, 0), schedule) == timedelta(hours=5)


def test_fall_back_night_shift_is_an_hour_longer() -> None:
    schedule = parse_working_hours({"timezone": "America/New_York", "days": {"sun": [["00:00", "06:00"]]}})
    start = local(NY, 2026, 11, 1, 0, 0)
    assert working_time_between(start, local(NY, 2026, 11, 1, 12, 0), schedule) == timedelta(hours=7)
    due = due_in_working_hours(start, 7, schedule)
    assert due.astimezone(NY) == local(NY, 2026, 11, 1, 6, 0)


def test_office_hours_across_a_dst_weekend_keep_the_wall_clock() -> None:
    schedule = default_schedule("Europe/Helsinki")
    # Friday 27 March 2026 16:00 EET (+2) + 4 h -> Monday 30 March 12:00 EEST (+3), i.e. 09:00 UTC.
    due = due_in_working_hours(local(HEL, 2026, 3, 27, 16, 0), 4, schedule)
    assert due == datetime(2026, 3, 30, 9, 0, tzinfo=UTC)
    assert due.astimezone(HEL).hour == 12


def test_working_time_between_and_is_working_time() -> None:
    schedule = default_schedule("Europe/Helsinki")
    friday = local(HEL, 2026, 11, 20, 16, 0)
    monday = local(HEL, 2026, 11, 23, 12, 0)
    assert working_time_between(friday, monday, schedule) == timedelta(hours=4)
    assert working_time_between(monday, friday, schedule) == timedelta(0)
    assert is_working_time(local(HEL, 2026, 11, 23, 9, 0), schedule)
    assert not is_working_time(local(HEL, 2026, 11, 23, 17, 0), schedule)
    assert not is_working_time(local(HEL, 2026, 11, 22, 12, 0), schedule)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"start": "9"}, "start"),
        ({"start": "17:00", "end": "09:00"}, "end"),
        ({"weekdays": [1, 8]}, "weekdays.1"),
        ({"weekdays": []}, "weekdays"),
        ({"days": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}}, "days.mon.1.0"),
        ({"days": {"moon": [["09:00", "12:00"]]}}, "days.moon"),
        ({"days": {"mon": [["09:00"]]}}, "days.mon.0"),
        ({"days": {"mon": []}}, "days"),
        ({"holidays": ["24.12.2026"]}, "holidays.0"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_schedules_name_the_field(value: dict[str, object], path: str) -> None:
    with pytest.raises(WorkingHoursError) as err:
        parse_working_hours(value)
    assert err.value.path == path


def test_naive_start_and_negative_hours_are_refused() -> None:
    schedule = default_schedule("UTC")
    with pytest.raises(ValueError):
        due_in_working_hours(datetime(2026, 11, 23, 9, 0), 1, schedule)
    with pytest.raises(ValueError):
        due_in_working_hours(datetime(2026, 11, 23, 9, 0, tzinfo=UTC), -1, schedule)
