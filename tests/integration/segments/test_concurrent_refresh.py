"""Two refreshes of the same segments at the same time (the live job, the periodic refresh, an API call): every
contact enters once, one history row and one segment.entered event each, no error."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import insert, select

from suppilo.contacts.models import Contact
from suppilo.events.models import Event
from suppilo.segments import service
from suppilo.segments.models import SegmentMembership, SegmentMembershipChange
from suppilo.segments.schemas import SegmentCreate


def test_concurrent_refreshes_store_each_change_once(session_factory, workspace):
    ws = workspace.id
    now = datetime.now(UTC)
    with session_factory() as s:
        seg = service.create_segment(
            s, ws, SegmentCreate(name="oulu", filter={"type": "contact", "field": "city", "op": "eq", "value": "Oulu"})
        )
        s.execute(
            insert(Contact),
            [{"workspace_id": ws, "email": f"o{i}@example.com", "city": "Oulu", "created_at": now, "updated_at": now}
             for i in range(300)],
        )  # fmt: skip
        s.commit()
        ids = list(s.scalars(select(Contact.id).where(Contact.workspace_id == ws)))
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def refresh(kind: int) -> None:
        try:
            barrier.wait()
            with session_factory() as s:
                if kind % 2:
                    service.refresh_segment(s, ws, seg.id, datetime.now(UTC))
                else:
                    service.update_for_contacts(s, ws, ids, {"contact"}, datetime.now(UTC))
                s.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=refresh, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with session_factory() as s:
        members = list(s.scalars(select(SegmentMembership.contact_id).where(SegmentMembership.segment_id == seg.id)))
        changes = Counter(
            s.scalars(select(SegmentMembershipChange.contact_id).where(SegmentMembershipChange.segment_id == seg.id))
        )
        events = s.scalar(select(Event.id).where(Event.workspace_id == ws, Event.name == "segment.entered").limit(1))
        entered = Counter(
            s.scalars(select(Event.contact_id).where(Event.workspace_id == ws, Event.name == "segment.entered"))
        )
        assert sorted(members) == sorted(ids)
        assert set(changes.values()) == {1} and set(entered.values()) == {1} and events is not None
        assert service.get_segment(s, ws, seg.id).member_count == 300
