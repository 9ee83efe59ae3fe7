"""Every trigger kind and the entry rules, on the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact, PropertyDefinition
from suppilo.db.base import utcnow
from suppilo.journeys import service, triggers
from suppilo.journeys.models import Journey
from suppilo.segments import service as segments_service
from suppilo.segments.schemas import SegmentCreate

from .support import contact, enrollments, event, install_templates, journey, messages, tick

HELLO = {"hello": {"type": "send_email", "template": "welcome"}}


@pytest.fixture
def ws(session_factory, workspace):
    install_templates(session_factory, workspace.id)
    return workspace


def _define(trigger: dict, **extra) -> dict:
    return {"name": "T", "trigger": trigger, "start": "hello", "steps": HELLO, **extra}


def test_stage_change_trigger_with_from_and_to(session_factory, ws):
    jid = journey(session_factory, ws.id, _define({"type": "stage_changed", "to": "decision", "from": "consideration"}))
    a = contact(session_factory, ws.id, "a@example.com", lifecycle_stage="consideration")
    b = contact(session_factory, ws.id, "b@example.com", lifecycle_stage="interest")
    with session_factory() as s:
        for cid in (a, b):
            contacts_service.change_stage(s, s.get(Contact, cid), "decision", reason="t", source="api")
        s.commit()
    tick(session_factory)
    assert [e.contact_id for e in enrollments(session_factory, jid)] == [a]


def test_segment_entered_trigger(session_factory, ws):
    with session_factory() as s:
        seg = segments_service.create_segment(s, ws.id, SegmentCreate(name="vip", kind="static"))
        s.commit()
    jid = journey(session_factory, ws.id, _define({"type": "segment_entered", "segment_id": seg.id}))
    cid = contact(session_factory, ws.id, "v@example.com")
    with session_factory() as s:
        segments_service.add_members(s, ws.id, seg.id, [cid])
        s.commit()
    tick(session_factory)
    assert [e.contact_id for e in enrollments(session_factory, jid)] == [cid]
    assert [m.template_key for m in messages(session_factory, ws.id, cid)] == ["welcome"]


def test_date_property_trigger_fires_once_on_the_day_in_the_contacts_zone(session_factory, ws):
    with session_factory() as s:
        now = utcnow()
        s.add(PropertyDefinition(workspace_id=ws.id, object_type="contact", name="renewal", label="Renewal",
                                 type="date", options=[], description="", created_at=now, updated_at=now))  # fmt: skip
        s.commit()
    today = datetime.now(UTC).date()
    renewal = (today + timedelta(days=7)).isoformat()
    due = contact(session_factory, ws.id, "due@example.com", properties={"renewal": renewal},
                  timezone="Pacific/Kiritimati")  # fmt: skip
    contact(
        session_factory, ws.id, "later@example.com", properties={"renewal": (today + timedelta(days=30)).isoformat()}
    )
    jid = journey(session_factory, ws.id, _define({"type": "date_property", "property": "renewal", "offset_days": -7,
                                                   "at": "00:00"}))  # fmt: skip
    # Kiritimati (UTC+14) may already be tomorrow: compute what "today" is there, as the trigger does.
    with session_factory() as s:
        j = s.get(Journey, jid)
        defn = service.current_definition(s, j)
        local_today = datetime.now(UTC).astimezone(__import__("zoneinfo").ZoneInfo("Pacific/Kiritimati")).date()
        n = triggers.run_date_trigger(s, j, defn, utcnow())
        again = triggers.run_date_trigger(s, j, defn, utcnow())
        s.commit()
    expected = 1 if local_today == today else 0
    assert (n, again) == (expected, 0)
    assert [e.contact_id for e in enrollments(session_factory, jid)] == ([due] if expected else [])


def test_anniversary_occurrence_handles_29_february():
    trig = triggers.jengine.DateTrigger(type="date_property", property="birthday", anniversary=True)
    from datetime import date

    assert triggers._occurrence(trig, date(2000, 2, 29), date(2027, 2, 28)) == date(2027, 2, 28)
    assert triggers._occurrence(trig, date(1990, 6, 1), date(2027, 6, 1)) == date(2027, 6, 1)
    assert triggers._occurrence(trig, date(1990, 6, 1), date(2027, 6, 2)) is None


def test_schedule_trigger_enrols_the_segment_once_per_occurrence(session_factory, ws):
    with session_factory() as s:
        seg = segments_service.create_segment(s, ws.id, SegmentCreate(name="weekly", kind="static"))
        s.commit()
    ids = [contact(session_factory, ws.id, f"w{i}@example.com") for i in range(3)]
    with session_factory() as s:
        segments_service.add_members(s, ws.id, seg.id, ids)
        s.commit()
    jid = journey(session_factory, ws.id, _define({"type": "schedule", "every": "week", "weekday": 1, "at": "09:00",
                                                   "segment_id": seg.id}, entry={"reentry": "always"}))  # fmt: skip
    with session_factory() as s:
        j = s.get(Journey, jid)
        first = j.next_run_at
        assert (
            first is not None and first.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Helsinki")).isoweekday() == 1
        )
        assert triggers.run_clock(s, first - timedelta(minutes=1)) == 0  # not yet
        assert triggers.run_clock(s, first + timedelta(seconds=1)) == 3
        assert s.get(Journey, jid).next_run_at == first + timedelta(days=7)
        s.commit()
    assert len(enrollments(session_factory, jid)) == 3


def test_entry_rules_exclusion_limits_and_reentry_after_days(session_factory, ws):
    with session_factory() as s:
        excluded = segments_service.create_segment(s, ws.id, SegmentCreate(name="staff", kind="static"))
        s.commit()
    staff = contact(session_factory, ws.id, "staff@example.com")
    others = [contact(session_factory, ws.id, f"o{i}@example.com") for i in range(4)]
    with session_factory() as s:
        segments_service.add_members(s, ws.id, excluded.id, [staff])
        s.commit()
    jid = journey(
        session_factory,
        ws.id,
        _define({"type": "manual"}, entry={"reentry": "after", "reentry_days": 30, "exclusion_segment_id": excluded.id,
                                           "max_entries": 3}),
    )  # fmt: skip
    with session_factory() as s:
        entered = service.enrol_contacts(s, ws.id, jid, [staff, *others], key="a")
        s.commit()
    assert staff not in entered and len(entered) == 3  # the limit
    tick(session_factory)
    with session_factory() as s:
        assert service.enrol_contacts(s, ws.id, jid, entered, key="b") == []  # ended, but within 30 days
        s.commit()


def test_paused_journey_keeps_contacts_waiting_and_lets_nobody_in(session_factory, ws):
    definition = {"name": "P", "trigger": {"type": "event", "event": "Signed Up"}, "start": "hello", "steps": HELLO}
    jid = journey(session_factory, ws.id, definition)
    a = contact(session_factory, ws.id, "a@example.com")
    with session_factory() as s:
        service.set_status(s, ws.id, jid, "paused")
        s.commit()
    event(session_factory, ws.id, a, "Signed Up")
    tick(session_factory)
    assert enrollments(session_factory, jid) == []
    with session_factory() as s:
        service.set_status(s, ws.id, jid, "active")
        s.commit()
    event(session_factory, ws.id, a, "Signed Up", again=1)
    tick(session_factory)
    assert len(enrollments(session_factory, jid)) == 1


def test_holdout_gets_nothing_and_the_report_compares_conversion(session_factory, ws):
    definition = {
        "name": "H",
        "trigger": {"type": "manual"},
        "goal": {"event": "Order Completed", "window_days": 14},
        "start": "split",
        "steps": {
            "split": {
                "type": "split",
                "variants": [{"name": "mail", "weight": 1, "next": "hello"}],
                "holdout_percent": 30,
            },
            "hello": {"type": "send_email", "template": "welcome"},
        },
    }
    jid = journey(session_factory, ws.id, definition)
    ids = [contact(session_factory, ws.id, f"h{i}@example.com") for i in range(60)]
    with session_factory() as s:
        service.enrol_contacts(s, ws.id, jid, ids, key="h")
        s.commit()
    tick(session_factory)
    rows = enrollments(session_factory, jid)
    held = [r for r in rows if r.group == "holdout"]
    assert 5 <= len(held) <= 35 and all(r.status == "active" for r in held)
    assert not messages(session_factory, ws.id, held[0].contact_id)
    for r in rows[:10]:
        event(session_factory, ws.id, r.contact_id, "Order Completed")
    tick(session_factory)
    with session_factory() as s:
        report = service.report(s, ws.id, jid)
    conv = report["conversion"]
    assert conv["treatment"]["contacts"] + conv["holdout"]["contacts"] == 60
    assert conv["treatment"]["converted"] + conv["holdout"]["converted"] == 10
    assert conv["lift"] is not None and "p_value" in conv["lift"]
    # After the goal window the holdout ends as holdout
    tick(session_factory, utcnow() + timedelta(days=15))
    assert {r.end_reason for r in enrollments(session_factory, jid) if r.group == "holdout"} == {"holdout"}


def test_enrolling_a_segment_applies_the_entry_rules_in_sql(session_factory, ws):
    with session_factory() as s:
        members = segments_service.create_segment(s, ws.id, SegmentCreate(name="all", kind="static"))
        staff = segments_service.create_segment(s, ws.id, SegmentCreate(name="staff", kind="static"))
        s.commit()
    ids = [contact(session_factory, ws.id, f"m{i}@example.com") for i in range(30)]
    with session_factory() as s:
        segments_service.add_members(s, ws.id, members.id, ids)
        segments_service.add_members(s, ws.id, staff.id, ids[:5])
        s.commit()
    jid = journey(
        session_factory,
        ws.id,
        _define({"type": "manual"}, entry={"reentry": "never", "exclusion_segment_id": staff.id, "max_entries": 20}),
    )
    with session_factory() as s:
        service.enrol_contacts(s, ws.id, jid, [ids[5]], key="first")  # already inside
        assert service.enrol_segment(s, ws.id, jid, members.id, key="bulk") == 19  # 20 minus the one inside
        assert service.enrol_segment(s, ws.id, jid, members.id, key="bulk2") == 0  # the limit is used up
        s.commit()
    rows = enrollments(session_factory, jid)
    assert len(rows) == 20 and not {r.contact_id for r in rows} & set(ids[:5])
    assert len({r.contact_id for r in rows}) == 20
    tick(session_factory)
    assert all(r.status == "ended" for r in enrollments(session_factory, jid))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"reentry": "never"}, "fresh"),
        ({"reentry": "always"}, "fresh+long_ago+recently"),
        ({"reentry": "after", "reentry_days": 30}, "fresh+long_ago"),
    ],
)
def test_enrolling_a_segment_in_chunks_applies_each_reentry_rule(session_factory, ws, monkeypatch, entry, expected):
    """Members across many chunks (five members each here): who is inside stays inside once, who ended re-enters as
    the rule says, and nobody is enrolled twice."""
    monkeypatch.setattr(service, "CHUNK", 1)  # a range of at most five members per INSERT ... SELECT
    with session_factory() as s:
        members = segments_service.create_segment(s, ws.id, SegmentCreate(name="all", kind="static"))
        s.commit()
    groups = {
        name: [contact(session_factory, ws.id, f"{name}{i}@example.com") for i in range(6)]
        for name in ("fresh", "inside", "long_ago", "recently")
    }
    every = sorted(cid for ids in groups.values() for cid in ids)
    with session_factory() as s:
        segments_service.add_members(s, ws.id, members.id, every)
        s.commit()
    jid = journey(session_factory, ws.id, _define({"type": "manual"}, entry=entry))
    with session_factory() as s:
        before = groups["inside"] + groups["long_ago"] + groups["recently"]
        assert len(service.enrol_contacts(s, ws.id, jid, before, key="earlier")) == 18
        s.commit()
    now = utcnow()
    with session_factory() as s:
        for row in enrollments(session_factory, jid):
            ended = {"long_ago": now - timedelta(days=40), "recently": now - timedelta(days=10)}
            for name, at in ended.items():
                if row.contact_id in groups[name]:
                    live = s.get(type(row), row.id)
                    live.status, live.end_reason, live.ended_at, live.entered_at = "ended", "completed", at, at
        s.commit()
    with session_factory() as s:
        entered = service.enrol_segment(s, ws.id, jid, members.id, key="bulk")
        s.commit()
    want = sorted(cid for name in expected.split("+") for cid in groups[name])
    assert entered == len(want)
    rows = enrollments(session_factory, jid)
    new = sorted(r.contact_id for r in rows if r.entry_key.startswith("bulk:"))
    assert new == want
    active = [r.contact_id for r in rows if r.status == "active"]
    assert len(active) == len(set(active))  # nobody inside twice
