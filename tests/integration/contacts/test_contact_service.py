"""Contact use cases on a real database: upsert by email, merges followed, optimistic locking, tag helpers."""

from __future__ import annotations

import pytest

from suppilo.contacts import service
from suppilo.contacts.models import ContactMerge
from suppilo.contacts.schemas import ContactCreate, ContactFilter, ContactUpdate
from suppilo.db.base import utcnow
from suppilo.errors import Conflict, DomainError, NotFound


def test_upsert_creates_then_fills(session, workspace) -> None:
    contact, created = service.upsert_contact_by_email(
        session, workspace.id, "Form@Example.com", {"first_name": "Fiona", "tags": ["webinar"]}, source="form:x"
    )
    assert created and contact.email == "form@example.com" and contact.first_name_lower == "fiona"
    again, created = service.upsert_contact_by_email(
        session,
        workspace.id,
        "form@EXAMPLE.com",
        {"last_name": "Smith", "first_name": "", "phone": "040 1234567", "tags": ["ebook"]},
        source="form:y",
    )
    assert not created and again.id == contact.id
    assert (again.first_name, again.last_name, again.phone) == ("Fiona", "Smith", "+358401234567")
    assert service.get_tags(session, workspace.id, contact.id) == ["ebook", "webinar"]
    assert again.version == 2
    with pytest.raises(DomainError) as err:
        service.upsert_contact_by_email(session, workspace.id, "a@example.com", {"shoe": 1}, source="form:x")
    assert err.value.field == "shoe"


def test_get_contact_follows_merges(session, workspace, other_workspace) -> None:
    kept = service.create_contact(session, workspace.id, ContactCreate(email="kept@example.com"))
    session.add(
        ContactMerge(workspace_id=workspace.id, contact_id=kept.id, merged_id=10**9, merged_at=utcnow(), reason="t")
    )
    session.add(
        ContactMerge(workspace_id=workspace.id, contact_id=10**9, merged_id=10**9 + 1, merged_at=utcnow(), reason="t")
    )
    session.flush()
    assert service.get_contact(session, workspace.id, 10**9 + 1).id == kept.id
    with pytest.raises(NotFound):
        service.get_contact(session, other_workspace.id, 10**9 + 1)
    with pytest.raises(NotFound) as err:
        service.get_contact(session, workspace.id, kept.id + 10**6)
    assert err.value.field == "contact_id"


def test_stale_version_is_refused_without_changes(session, workspace) -> None:
    c = service.create_contact(session, workspace.id, ContactCreate(email="v@example.com", city="Oulu"))
    service.update_contact(session, workspace.id, c.id, ContactUpdate(city="Espoo"), expected_version=1)
    assert c.version == 2
    with pytest.raises(Conflict) as err:
        service.update_contact(session, workspace.id, c.id, ContactUpdate(city="Vaasa"), expected_version=1)
    assert err.value.code == "version_conflict"
    session.expire_all()
    fresh = service.get_contact(session, workspace.id, c.id)
    assert fresh.city == "Espoo" and fresh.version == 2


def test_duplicate_email_on_update_is_conflict(session, workspace) -> None:
    service.create_contact(session, workspace.id, ContactCreate(email="one@example.com"))
    two = service.create_contact(session, workspace.id, ContactCreate(email="two@example.com"))
    with pytest.raises(Conflict) as err:
        service.update_contact(session, workspace.id, two.id, ContactUpdate(email="ONE@example.com"))
    assert err.value.field == "email"


def test_tag_helpers_and_tag_filter(session, workspace) -> None:
    c = service.create_contact(session, workspace.id, ContactCreate(email="tags@example.com", tags=["b"]))
    assert service.add_tags(session, workspace.id, c.id, ["A", "c"]) == ["a", "b", "c"]
    assert service.remove_tags(session, workspace.id, c.id, ["b", "missing"]) == ["a", "c"]
    assert service.set_tags(session, workspace.id, c.id, ["d"]) == ["d"]
    page = service.list_contacts(session, workspace.id, ContactFilter(tag="d"))
    assert [x.id for x in page.items] == [c.id] and page.items[0].tags == ["d"]
    assert service.list_contacts(session, workspace.id, ContactFilter(tag="a")).items == []
