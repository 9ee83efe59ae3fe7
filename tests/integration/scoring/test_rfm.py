"""RFM over real orders: scores and groups stored on the contacts, usable in segments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from suppilo.commerce.models import Order
from suppilo.contacts.models import Contact
from suppilo.scoring import rfm
from suppilo.segments import service as segments_service
from suppilo.segments.schemas import SegmentCreate

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_rfm_groups_are_stored_and_segmentable(session, workspace):
    ws = workspace.id
    ids = []
    for i in range(10):
        c = Contact(workspace_id=ws, email=f"r{i}@example.com", created_at=NOW, updated_at=NOW)
        session.add(c)
        session.flush()
        ids.append(c.id)
        # contact i: i+1 orders, the last one i*40 days ago
        for k in range(i + 1):
            session.add(
                Order(workspace_id=ws, external_id=f"o{i}-{k}", contact_id=c.id, status="completed",
                      placed_at=NOW - timedelta(days=i * 40 + k), currency="EUR", total_minor=1000 * (i + 1))
            )  # fmt: skip
    session.flush()
    out = rfm.compute(session, ws, NOW)
    assert out["customers"] == 10 and sum(out["groups"].values()) == 10
    props = {c.id: c.properties for c in session.scalars(select(Contact).where(Contact.workspace_id == ws))}
    assert all(len(props[c]["rfm_code"]) == 3 for c in ids)
    assert props[ids[0]]["rfm_code"][0] == "5" and props[ids[9]]["rfm_code"][0] == "1"
    group = props[ids[9]]["rfm_group"]
    seg = segments_service.create_segment(
        session,
        ws,
        SegmentCreate(
            name="g", filter={"type": "contact", "field": "properties.rfm_group", "op": "eq", "value": group}
        ),
    )
    assert ids[9] in {m.contact_id for m in segments_service.list_members(session, ws, seg.id)[0]}
