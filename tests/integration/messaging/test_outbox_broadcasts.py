"""Broadcasts: list and tag audiences, chunked and resumable enqueuing with one row per contact, local send times
across DST changes (each contact's zone, the workspace's for contacts without one), then a real send."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time

import pytest
from sqlalchemy import select

from suppilo.contacts.models import ContactTag
from suppilo.errors import DomainError
from suppilo.messaging import broadcasts, outbox
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.messaging.service import install_default_templates
from tests.integration.messaging.outbox_support import SmtpSink, add_contact, drain, make_sender


def _rows(factory, ws, broadcast_id):
    with factory() as s:
        return list(
            s.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.workspace_id == ws, OutboxMessage.broadcast_id == broadcast_id)
                .order_by(OutboxMessage.contact_id)
            )
        )


@pytest.mark.parametrize(
    ("day", "at", "expected"),
    [
        # Spring forward in Europe (30 March 2025) and in the US (9 March 2025): 09:00 local, once.
        (date(2025, 3, 30), time(9, 0), {"Europe/Berlin": "07:00", "America/New_York": "13:00", None: "06:00"}),
        # Autumn (26 October 2025): 09:00 local is after the change.
        (date(2025, 10, 26), time(9, 0), {"Europe/Berlin": "08:00", "America/New_York": "13:00", None: "07:00"}),
        # 02:30 does not exist in Berlin on the spring day: sent once, right after the gap (03:30 CEST).
        (date(2025, 3, 30), time(2, 30), {"Europe/Berlin": "01:30", "America/New_York": "06:30", None: "00:30"}),
    ],
)
def test_local_time_broadcast_gives_each_contact_one_message_at_its_local_time(
    session_factory, workspace, day, at, expected
):
    ws = workspace.id  # the workspace's zone is Europe/Helsinki
    zones = {
        add_contact(session_factory, ws, f"{i}-{day}-{at.hour}@example.com", country="US", timezone=zone): zone
        for i, zone in enumerate(expected)
    }
    with session_factory() as s:
        b = broadcasts.create_broadcast(
            s, ws, name="Spring", template_key="welcome", contact_ids=list(zones), local_date=day, local_time=at
        )
        s.commit()
        bid = b.id
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert broadcasts.run_due_broadcasts(session_factory, now=now) == 0  # not due yet
    due = datetime.combine(day, time(0, 0), tzinfo=UTC)
    assert broadcasts.run_due_broadcasts(session_factory, now=due) == 3
    assert broadcasts.run_due_broadcasts(session_factory, now=due) == 0  # done, nothing twice
    rows = _rows(session_factory, ws, bid)
    got = {zones[r.contact_id]: r.not_before.astimezone(UTC).strftime("%H:%M") for r in rows}
    assert got == expected
    assert all(r.dedupe_key == f"broadcast:{bid}:contact:{r.contact_id}" for r in rows)


def test_tag_broadcast_enqueues_in_resumable_chunks_and_sends(session_factory, workspace, other_workspace):
    ws = workspace.id
    with session_factory() as s:
        install_default_templates(s, ws)
        s.commit()
    tagged = [add_contact(session_factory, ws, f"t{i}@example.com", country="US", language="en") for i in range(5)]
    add_contact(session_factory, ws, "untagged@example.com", country="US")
    foreign = add_contact(session_factory, other_workspace.id, "foreign@example.com", country="US")
    with session_factory() as s:
        for cid in tagged:
            s.add(ContactTag(workspace_id=ws, contact_id=cid, tag="campers"))
        s.add(ContactTag(workspace_id=other_workspace.id, contact_id=foreign, tag="campers"))
        b = broadcasts.create_broadcast(s, ws, name="Campers", template_key="welcome", tag="campers")
        s.commit()
        bid = b.id
    with session_factory() as s:
        row = broadcasts.get_broadcast(s, ws, bid)
        assert broadcasts.enqueue_chunk(s, row, chunk=2) == 2
        s.commit()  # a crash here would resume from the cursor
    with session_factory() as s:
        row = broadcasts.get_broadcast(s, ws, bid)
        row.cursor = 0  # even replaying from the start queues nothing twice
        s.commit()
    assert broadcasts.run_due_broadcasts(session_factory) == 3
    rows = _rows(session_factory, ws, bid)
    assert sorted(r.contact_id for r in rows) == tagged
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        asyncio.run(drain(sender, transport))
    assert sorted(r.rcpt_tos[0] for r in sink.received) == sorted(f"t{i}@example.com" for i in range(5))
    with session_factory() as s:
        assert broadcasts.get_broadcast(s, ws, bid).enqueued == 5
        assert outbox.counts(s, ws) == {"sent": 5}


def test_broadcast_validation(session_factory, workspace, other_workspace):
    foreign = add_contact(session_factory, other_workspace.id, "x@example.com")
    with session_factory() as s:
        with pytest.raises(DomainError) as exc:
            broadcasts.create_broadcast(s, workspace.id, name="x", template_key="welcome", contact_ids=[foreign])
        assert exc.value.status == 404 and exc.value.field == "contact_ids[0]"
        with pytest.raises(DomainError):
            broadcasts.create_broadcast(s, workspace.id, name="x", template_key="welcome")
        with pytest.raises(DomainError):
            broadcasts.create_broadcast(
                s, workspace.id, name="x", template_key="welcome", tag="a", local_date=date(2025, 1, 1)
            )


def test_segment_broadcast_reaches_the_members_at_queue_time(session_factory, workspace, other_workspace):
    from suppilo.segments import service as segments_service
    from suppilo.segments.schemas import SegmentCreate

    ws = workspace.id
    with session_factory() as s:
        install_default_templates(s, ws)
        seg = segments_service.create_segment(
            s,
            ws,
            SegmentCreate(name="hikers", filter={"type": "contact", "field": "city", "op": "eq", "value": "Oulu"}),
        )
        s.commit()
    early = add_contact(session_factory, ws, "early@example.com", country="US", city="Oulu")
    add_contact(session_factory, ws, "elsewhere@example.com", country="US", city="Turku")
    with session_factory() as s:
        segments_service.refresh_segment(s, ws, seg.id, datetime.now(UTC))
        b = broadcasts.create_broadcast(s, ws, name="Hikers", template_key="welcome", segment_id=seg.id)
        s.commit()
        bid = b.id
    late = add_contact(session_factory, ws, "late@example.com", country="US", city="Oulu")
    with session_factory() as s:
        segments_service.refresh_segment(s, ws, seg.id, datetime.now(UTC))
        s.commit()
    assert broadcasts.run_due_broadcasts(session_factory) == 2
    assert sorted(r.contact_id for r in _rows(session_factory, ws, bid)) == sorted([early, late])
    with session_factory() as s, pytest.raises(DomainError) as exc:
        other = segments_service.create_segment(s, other_workspace.id, SegmentCreate(name="x", kind="static"))
        broadcasts.create_broadcast(s, ws, name="x", template_key="welcome", segment_id=other.id)
    assert exc.value.status == 404
