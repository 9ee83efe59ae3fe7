"""Segments follow what happens: a new event, a stage change or an edited contact moves membership within one run
of the live-update job, without a full refresh, and the move is a segment.entered event journeys can use."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact
from suppilo.contacts.schemas import ContactCreate, ContactUpdate
from suppilo.db.base import utcnow
from suppilo.events import service as events_service
from suppilo.events.models import Event
from suppilo.segments import service, tasks
from suppilo.segments.models import SegmentMembership
from suppilo.segments.schemas import SegmentCreate


def _segment(factory, ws, name, flt):
    with factory() as s:
        seg = service.create_segment(s, ws, SegmentCreate(name=name, filter=flt))
        s.commit()
        return seg.id


def _members(factory, sid):
    with factory() as s:
        return set(s.scalars(select(SegmentMembership.contact_id).where(SegmentMembership.segment_id == sid)))


def test_events_stages_and_edits_move_membership_at_once(session_factory, workspace):
    ws = workspace.id
    with session_factory() as s:
        tasks.update_from_events(s)  # the consumers start at the end of the log
        tasks.update_from_stage_changes(s)
        c = contacts_service.create_contact(s, ws, ContactCreate(email="ella@example.fi", first_name="Ella"))
        s.commit()
        cid = c.id
    downloaded = _segment(
        session_factory, ws, "downloaded", {"type": "event", "name": "Guide Downloaded", "op": "at_least", "value": 1}
    )
    deciding = _segment(session_factory, ws, "deciding", {"type": "stage", "op": "in", "value": ["decision"]})
    buyers = _segment(
        session_factory, ws, "buyers", {"type": "contact", "field": "job_title", "op": "eq", "value": "Buyer"}
    )
    assert _members(session_factory, downloaded) == set()

    with session_factory() as s:
        events_service.record_event(s, ws, cid, "Guide Downloaded", {"guide": "tents"}, utcnow())
        contact = s.get(Contact, cid)
        contacts_service.change_stage(s, contact, "decision", reason="test", source="api")
        contacts_service.update_contact(s, ws, cid, ContactUpdate(job_title="Buyer"))
        s.commit()
    tasks.run_live_updates(session_factory)
    assert _members(session_factory, downloaded) == {cid}
    assert _members(session_factory, deciding) == {cid}
    assert _members(session_factory, buyers) == {cid}
    with session_factory() as s:
        entered = list(
            s.scalars(select(Event.properties).where(Event.contact_id == cid, Event.name == "segment.entered"))
        )
    assert {p["segment_id"] for p in entered} == {downloaded, deciding, buyers}

    # and out again when it no longer holds
    with session_factory() as s:
        contacts_service.update_contact(s, ws, cid, ContactUpdate(job_title="Engineer"))
        s.commit()
    tasks.run_live_updates(session_factory)
    assert _members(session_factory, buyers) == set()


def test_contact_edits_past_the_window_are_not_looked_at_again(session_factory, workspace):
    with session_factory() as s:
        n = tasks.update_from_contact_edits(s, utcnow() + timedelta(hours=1), utcnow() + timedelta(hours=2))
    assert n == 0
