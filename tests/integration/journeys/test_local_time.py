"""``wait_until`` through the runner: each contact waits for the time of day in its own zone (the workspace's when it
has none) across a daylight-saving change, in a batch that also holds journeys without local times."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from suppilo.db.base import utcnow
from suppilo.journeys import runner, service
from suppilo.journeys.models import Enrollment

from .support import contact, install_templates, journey, messages

MORNING = {
    "name": "Morning mail",
    "trigger": {"type": "manual"},
    "start": "hello",
    "steps": {
        "hello": {"type": "send_email", "template": "welcome", "next": "morning"},
        "morning": {"type": "wait_until", "time": "09:00", "next": "bye"},
        "bye": {"type": "send_email", "template": "win_back"},
    },
}
PLAIN = {
    "name": "Plain mail",
    "trigger": {"type": "manual"},
    "start": "hello",
    "steps": {"hello": {"type": "send_email", "template": "welcome"}},
}


def _next_change(zone: ZoneInfo, after: datetime) -> date:
    """The first local day after ``after`` whose 09:00 is not 24 hours after the previous day's (a DST change)."""
    day = after.astimezone(zone).date() + timedelta(days=2)
    for _ in range(400):
        nine = datetime.combine(day, time(9), tzinfo=zone).astimezone(UTC)
        before = datetime.combine(day - timedelta(days=1), time(9), tzinfo=zone).astimezone(UTC)
        if nine - before != timedelta(days=1):
            return day
        day += timedelta(days=1)
    raise AssertionError("no daylight-saving change within 400 days")


@pytest.mark.parametrize("zone_name", ["America/New_York", "Europe/Helsinki"])
def test_wait_until_is_nine_local_for_each_contact_across_a_dst_change(session_factory, workspace, zone_name):
    ws = workspace.id  # the workspace's zone is Europe/Helsinki
    install_templates(session_factory, ws)
    zone = ZoneInfo(zone_name)
    change = _next_change(zone, utcnow())
    # The runner first looks on the evening before the change (local), so the wait crosses it.
    evening = datetime.combine(change - timedelta(days=1), time(20), tzinfo=zone).astimezone(UTC)
    expected = datetime.combine(change, time(9), tzinfo=zone).astimezone(UTC)

    zoned = contact(session_factory, ws, "zoned@example.com", timezone=zone_name)
    unzoned = contact(session_factory, ws, "unzoned@example.com")  # the workspace's zone applies
    morning = journey(session_factory, ws, MORNING)
    plain = journey(session_factory, ws, PLAIN)
    with session_factory() as s:
        service.enrol_contacts(s, ws, morning, [zoned, unzoned], key="t")
        service.enrol_contacts(s, ws, plain, [zoned, unzoned], key="t")
        s.commit()

    # Both journeys' enrollments are due together (other tests' may be as well: the runner serves every workspace).
    runner.run_due(session_factory, now=lambda: evening)
    with session_factory() as s:
        due = dict(
            s.execute(
                select(Enrollment.contact_id, Enrollment.due_at).where(
                    Enrollment.journey_id == morning, Enrollment.status == "active"
                )
            ).all()
        )
        ended = list(s.scalars(select(Enrollment.end_reason).where(Enrollment.journey_id == plain)))
    helsinki = ZoneInfo("Europe/Helsinki")
    evening_day = evening.astimezone(helsinki).date()
    nines = [datetime.combine(evening_day + timedelta(days=d), time(9), tzinfo=helsinki) for d in (0, 1)]
    assert due[zoned] == expected
    assert due[unzoned] == next(nine for nine in nines if nine > evening).astimezone(UTC)
    assert ended == ["completed", "completed"]

    def templates(contact_id: int) -> list[str | None]:
        return [m.template_key for m in messages(session_factory, ws, contact_id)]

    runner.run_due(session_factory, now=lambda: expected - timedelta(minutes=1))
    assert "win_back" not in templates(zoned)
    runner.run_due(session_factory, now=lambda: expected + timedelta(minutes=1))
    assert templates(zoned).count("win_back") == 1
