"""merge_contacts and record_event on a real database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from suppilo.contacts.merge import merge_contacts
from suppilo.contacts.models import Contact, ContactIdentity, ContactMerge, ContactTag, StageChange
from suppilo.errors import DomainError, NotFound
from suppilo.events.models import Event, Touch
from suppilo.events.service import record_event
from suppilo.workspaces.models import AuditLog

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T1 = datetime(2024, 2, 1, tzinfo=UTC)
T2 = datetime(2024, 3, 1, tzinfo=UTC)


def _contact(session, ws: int, **kw) -> Contact:
    kw.setdefault("properties", {})
    c = Contact(workspace_id=ws, **kw)
    session.add(c)
    session.flush()
    return c


def test_merge_moves_history_and_fills_fields(session, workspace) -> None:
    ws = workspace.id
    keep = _contact(
        session,
        ws,
        email="k@example.com",
        lifecycle_stage="interest",
        first_touch_at=T1,
        first_touch_channel="email",
        latest_touch_at=T1,
        latest_touch_channel="email",
        properties={"plan": "pro"},
    )
    merged = _contact(
        session,
        ws,
        external_id="u1",
        first_name="Kim",
        phone="+358401234567",
        lifecycle_stage="customer",
        first_touch_at=T0,
        first_touch_channel="organic_search",
        latest_touch_at=T2,
        latest_touch_channel="paid_search",
        properties={"plan": "free", "x": 1},
    )
    session.add(ContactIdentity(workspace_id=ws, kind="anonymous_id", value="a1", contact_id=merged.id, created_at=T0))
    session.add_all(
        [
            ContactTag(contact_id=keep.id, tag="vip", workspace_id=ws),
            ContactTag(contact_id=merged.id, tag="vip", workspace_id=ws),
            ContactTag(contact_id=merged.id, tag="newsletter", workspace_id=ws),
        ]
    )
    session.add(
        StageChange(
            workspace_id=ws,
            contact_id=merged.id,
            from_stage=None,
            to_stage="customer",
            changed_at=T0,
            reason="first order",
            source="rule",
        )
    )
    session.flush()
    record_event(session, ws, merged.id, "Order Completed", {"total": 10}, T0, message_id="m-1")
    session.add(Touch(workspace_id=ws, contact_id=merged.id, occurred_at=T0, channel="organic_search"))
    session.flush()

    result = merge_contacts(session, ws, keep.id, merged.id, reason="duplicate", actor="test")
    assert result.id == keep.id
    assert session.get(Contact, merged.id) is None
    assert keep.external_id == "u1" and keep.first_name == "Kim" and keep.email == "k@example.com"
    assert keep.first_touch_channel == "organic_search" and keep.latest_touch_channel == "paid_search"
    assert keep.lifecycle_stage == "customer" and keep.properties == {"plan": "pro", "x": 1}
    assert session.scalar(select(func.count()).select_from(Event).where(Event.contact_id == keep.id)) == 1
    assert session.scalar(select(func.count()).select_from(Touch).where(Touch.contact_id == keep.id)) == 1
    assert (
        session.scalar(
            select(ContactIdentity.contact_id).where(ContactIdentity.value == "a1", ContactIdentity.workspace_id == ws)
        )
        == keep.id
    )
    tags = session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == keep.id)).all()
    assert sorted(tags) == ["newsletter", "vip"]
    changes = session.scalars(select(StageChange).where(StageChange.contact_id == keep.id)).all()
    assert any(c.reason == "merge" and c.to_stage == "customer" for c in changes)
    assert any(c.reason == "first order" for c in changes)
    record = session.scalar(select(ContactMerge).where(ContactMerge.workspace_id == ws))
    assert record.merged_id == merged.id and record.snapshot["external_id"] == "u1"
    assert session.scalar(
        select(AuditLog.action).where(AuditLog.workspace_id == ws, AuditLog.action == "contact.merged")
    )


def test_merge_refuses_self_and_foreign_contacts(session, workspace, other_workspace) -> None:
    a = _contact(session, workspace.id)
    foreign = _contact(session, other_workspace.id)
    with pytest.raises(DomainError):
        merge_contacts(session, workspace.id, a.id, a.id, reason="x", actor=None)
    with pytest.raises(NotFound):
        merge_contacts(session, workspace.id, a.id, foreign.id, reason="x", actor=None)
    assert session.get(Contact, foreign.id) is not None


def test_record_event_is_idempotent(session, workspace) -> None:
    c = _contact(session, workspace.id)
    first = record_event(session, workspace.id, c.id, "Form Submitted", {"form": "demo"}, T0, message_id="f-1")
    again = record_event(session, workspace.id, c.id, "Form Submitted", {"form": "demo"}, T0, message_id="f-1")
    assert first is not None and again is None
    a = record_event(session, workspace.id, c.id, "Cart Abandoned", {"cart": "c1"}, T1)
    b = record_event(session, workspace.id, c.id, "Cart Abandoned", {"cart": "c1"}, T1)
    assert a is not None and b is None
    assert session.scalar(select(func.count()).select_from(Event).where(Event.workspace_id == workspace.id)) == 2
