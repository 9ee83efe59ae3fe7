"""Quiet hours in the contact's zone, including the days clocks change (Helsinki, Riga, New York)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from suppilo.engine.quiet_hours import (
    QuietHours,
    QuietHoursError,
    local_instant,
    next_allowed,
    parse_quiet_hours,
    quiet_until,
    zone,
)

NIGHT = QuietHours(time(21, 0), time(8, 0))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_parse_accepts_hh_mm_and_refuses_bad_values_with_the_field() -> None:
    assert parse_quiet_hours({"start": "21:00", "end": "08:00"}) == NIGHT
    assert parse_quiet_hours({"start": "12:30", "end": "13:45"}).as_dict() == {"start": "12:30", "end": "13:45"}
    cases = [
        ({"start": "25:00", "end": "08:00"}, "start"),
        ({"start": "21:00", "end": "8:00"}, "end"),
        ({"start": "21:00"}, "end"),
        ({"end": "08:00"}, "start"),
        ({"start": "21:00", "end": "21:00"}, "end"),
        ({"start": 2100, "end": "08:00"}, "start"),
        ({"start": "21:00", "end": "08:00", "tz": "UTC"}, "tz"),
        ("21-08", ""),
    ]
    for value, path in cases:
        with pytest.raises(QuietHoursError) as info:
            parse_quiet_hours(value)
        assert info.value.path == path, value


def test_unknown_zone_is_refused() -> None:
    with pytest.raises(QuietHoursError) as info:
        zone("Mars/Olympus")
    assert info.value.path == "timezone"


def test_outside_the_window_sends_now() -> None:
    now = utc(2024, 6, 12, 12, 0)  # 15:00 in Helsinki
    assert quiet_until(now, "Europe/Helsinki", NIGHT) is None
    assert next_allowed(now, "Europe/Helsinki", NIGHT) == now
    assert next_allowed(now, "Europe/Helsinki", None) == now


def test_same_utc_instant_is_quiet_in_helsinki_but_not_in_new_york() -> None:
    now = utc(2024, 6, 12, 20, 0)  # 23:00 in Helsinki (EEST), 16:00 in New York (EDT)
    assert next_allowed(now, "Europe/Helsinki", NIGHT) == utc(2024, 6, 13, 5, 0)  # 08:00 EEST
    assert next_allowed(now, "America/New_York", NIGHT) == now


def test_window_boundaries_start_inclusive_end_exclusive() -> None:
    assert quiet_until(utc(2024, 6, 12, 18, 0), "Europe/Helsinki", NIGHT) == utc(2024, 6, 13, 5, 0)  # 21:00 sharp
    assert quiet_until(utc(2024, 6, 12, 17, 59, 59), "Europe/Helsinki", NIGHT) is None
    assert quiet_until(utc(2024, 6, 13, 5, 0), "Europe/Helsinki", NIGHT) is None  # 08:00 sharp
    assert quiet_until(utc(2024, 6, 13, 4, 59), "Europe/Helsinki", NIGHT) == utc(2024, 6, 13, 5, 0)


def test_window_within_one_day() -> None:
    lunch = QuietHours(time(12, 0), time(13, 30))
    assert quiet_until(utc(2024, 1, 15, 11, 0), "Europe/Riga", lunch) == utc(2024, 1, 15, 11, 30)  # 13:00 EET
    assert quiet_until(utc(2024, 1, 15, 12, 0), "Europe/Riga", lunch) is None


def test_after_midnight_part_of_the_window_ends_the_same_local_day() -> None:
    now = utc(2024, 1, 15, 23, 30)  # 01:30 on the 16th in Helsinki (EET)
    assert quiet_until(now, "Europe/Helsinki", NIGHT) == utc(2024, 1, 16, 6, 0)


# --- spring forward -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["Europe/Helsinki", "Europe/Riga"])
def test_spring_forward_night_in_eet_ends_at_eight_summer_time(tz: str) -> None:
    # 2024-03-31: 03:00 EET becomes 04:00 EEST. 02:00 local (00:00 UTC) is quiet; 08:00 EEST is 05:00 UTC.
    assert quiet_until(utc(2024, 3, 31, 0, 0), tz, NIGHT) == utc(2024, 3, 31, 5, 0)
    # The evening before, 22:00 EET (20:00 UTC), waits the same: a night one hour shorter in real time.
    assert quiet_until(utc(2024, 3, 30, 20, 0), tz, NIGHT) == utc(2024, 3, 31, 5, 0)


@pytest.mark.parametrize("tz", ["Europe/Helsinki", "Europe/Riga"])
def test_skipped_end_time_moves_to_the_first_valid_instant_eet(tz: str) -> None:
    window = QuietHours(time(22, 0), time(3, 30))  # 03:30 does not exist on 2024-03-31
    assert local_instant(date(2024, 3, 31), time(3, 30), zone(tz)) == utc(2024, 3, 31, 1, 0)  # 04:00 EEST
    assert quiet_until(utc(2024, 3, 30, 23, 0), tz, window) == utc(2024, 3, 31, 1, 0)
    assert quiet_until(utc(2024, 3, 31, 1, 0), tz, window) is None


def test_spring_forward_new_york() -> None:
    # 2024-03-10: 02:00 EST becomes 03:00 EDT (07:00 UTC). Midnight EST = 05:00 UTC.
    assert quiet_until(utc(2024, 3, 10, 5, 0), "America/New_York", NIGHT) == utc(2024, 3, 10, 12, 0)  # 08:00 EDT
    window = QuietHours(time(22, 0), time(2, 30))  # 02:30 is skipped
    assert local_instant(date(2024, 3, 10), time(2, 30), zone("America/New_York")) == utc(2024, 3, 10, 7, 0)
    assert quiet_until(utc(2024, 3, 10, 5, 0), "America/New_York", window) == utc(2024, 3, 10, 7, 0)
    assert quiet_until(utc(2024, 3, 10, 7, 0), "America/New_York", window) is None


def test_skipped_start_time_starts_at_the_change() -> None:
    window = QuietHours(time(2, 30), time(6, 0))
    # On 2024-03-10 New York skips 02:00-03:00; the window starts at 03:00 EDT (07:00 UTC).
    assert quiet_until(utc(2024, 3, 10, 6, 59), "America/New_York", window) is None
    assert quiet_until(utc(2024, 3, 10, 7, 0), "America/New_York", window) == utc(2024, 3, 10, 10, 0)


# --- fall back ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["Europe/Helsinki", "Europe/Riga"])
def test_fall_back_night_in_eet_ends_at_eight_winter_time(tz: str) -> None:
    # 2024-10-27: 04:00 EEST becomes 03:00 EET (01:00 UTC). 08:00 EET is 06:00 UTC; the night is an hour longer.
    assert quiet_until(utc(2024, 10, 26, 19, 0), tz, NIGHT) == utc(2024, 10, 27, 6, 0)  # from 22:00 EEST
    assert quiet_until(utc(2024, 10, 27, 1, 30), tz, NIGHT) == utc(2024, 10, 27, 6, 0)  # 03:30 EET


@pytest.mark.parametrize("tz", ["Europe/Helsinki", "Europe/Riga"])
def test_repeated_end_time_is_its_first_occurrence_eet(tz: str) -> None:
    window = QuietHours(time(22, 0), time(3, 30))  # 03:30 happens twice on 2024-10-27
    first = utc(2024, 10, 27, 0, 30)  # 03:30 EEST
    assert local_instant(date(2024, 10, 27), time(3, 30), zone(tz)) == first
    assert quiet_until(utc(2024, 10, 27, 0, 15), tz, window) == first  # 03:15 EEST
    # 03:15 EET (the second time the clock shows it) is after the window ended: not quiet.
    assert quiet_until(utc(2024, 10, 27, 1, 15), tz, window) is None


def test_fall_back_new_york() -> None:
    # 2024-11-03: 02:00 EDT becomes 01:00 EST (06:00 UTC). 08:00 EST = 13:00 UTC.
    assert quiet_until(utc(2024, 11, 3, 5, 30), "America/New_York", NIGHT) == utc(2024, 11, 3, 13, 0)  # 01:30 EDT
    assert quiet_until(utc(2024, 11, 3, 6, 30), "America/New_York", NIGHT) == utc(2024, 11, 3, 13, 0)  # 01:30 EST
    window = QuietHours(time(23, 0), time(1, 30))  # 01:30 is repeated
    first = utc(2024, 11, 3, 5, 30)  # 01:30 EDT
    assert local_instant(date(2024, 11, 3), time(1, 30), zone("America/New_York")) == first
    assert quiet_until(utc(2024, 11, 3, 5, 0), "America/New_York", window) == first
    assert quiet_until(utc(2024, 11, 3, 6, 0), "America/New_York", window) is None  # 01:00 EST, second pass


def test_repeated_start_time_starts_at_the_first_occurrence() -> None:
    window = QuietHours(time(1, 30), time(5, 0))
    assert quiet_until(utc(2024, 11, 3, 5, 29), "America/New_York", window) is None  # 01:29 EDT
    assert quiet_until(utc(2024, 11, 3, 5, 30), "America/New_York", window) == utc(2024, 11, 3, 10, 0)


def test_every_minute_of_a_dst_week_is_answered_consistently() -> None:
    # For every minute around both changes: the answer is either now (not quiet) or a later instant that is itself
    # not quiet and whose local wall time is the window's end (or the first valid instant after it).
    for tz_name, start in (
        ("Europe/Helsinki", utc(2024, 3, 29)),
        ("Europe/Helsinki", utc(2024, 10, 25)),
        ("America/New_York", utc(2024, 3, 8)),
        ("America/New_York", utc(2024, 11, 1)),
    ):
        tz = zone(tz_name)
        for window in (NIGHT, QuietHours(time(22, 0), time(3, 30)), QuietHours(time(1, 15), time(2, 45))):
            moment = start
            while moment < start + timedelta(days=4):
                answer = next_allowed(moment, tz_name, window)
                assert answer >= moment
                if answer > moment:
                    assert quiet_until(answer, tz_name, window) is None
                    wall = answer.astimezone(tz).time()
                    assert (
                        wall == window.end
                        or answer.astimezone(tz).utcoffset()
                        != (answer - timedelta(seconds=1)).astimezone(tz).utcoffset()
                    )
                moment += timedelta(minutes=15)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        quiet_until(datetime(2024, 1, 1), "UTC", NIGHT)
