"""Form submissions through the capture service on a real database."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from suppilo.capture import service as capture_service
from suppilo.capture.ratelimit import SlidingWindowLimiter
from suppilo.capture.schemas import FormCreate
from suppilo.companies.models import Company
from suppilo.contacts import properties as contact_properties
from suppilo.contacts.models import Contact, ContactIdentity, StageChange
from suppilo.contacts.schemas import PropertyDefinitionCreate
from suppilo.events.ingest import ingest
from suppilo.events.models import Event


def make_form(session, workspace_id, **overrides):
    data = {
        "slug": "demo",
        "name": "Book a demo",
        "fields": [
            {"name": "email", "label": "Email", "type": "email", "required": True, "maps_to": "email"},
            {"name": "company", "label": "Company", "maps_to": "company_name"},
            {
                "name": "size",
                "label": "Team size",
                "type": "select",
                "options": ["1-10", "11-50"],
                "maps_to": "properties.team_size",
            },
            {"name": "campaign", "label": "Campaign", "type": "hidden", "default": "autumn"},
        ],
        "tags": ["demo-request"],
    }
    data.update(overrides)
    return capture_service.create_form(session, workspace_id, FormCreate(**data))


def define_team_size(session, workspace_id):
    contact_properties.create_definition(
        session,
        workspace_id,
        PropertyDefinitionCreate(
            object_type="contact", name="team_size", label="Team size", type="enum", options=["1-10", "11-50"]
        ),
    )


def test_anonymous_page_views_join_the_contact(session, workspace):
    define_team_size(session, workspace.id)
    form = make_form(session, workspace.id)
    ingest(
        session,
        workspace.id,
        [
            {
                "type": "page",
                "anonymousId": "anon-42",
                "messageId": "pv-1",
                "properties": {"url": "https://shop.example.fi/?utm_source=newsletter&utm_medium=email"},
                "context": {"campaign": {"source": "newsletter", "medium": "email"}},
            }
        ],
    )
    outcome = capture_service.submit_form(
        session,
        form,
        capture_service.SubmissionInput(
            values={
                "email": "lea@gmail.com",
                "company": "Sauna Oy",
                "size": "11-50",
                "suppilo_anonymous_id": "anon-42",
            },
            ip="192.0.2.1",
        ),
    )
    session.flush()
    assert outcome.stored and outcome.created and outcome.stage_changed_to == "interest"
    contact = session.scalar(
        select(Contact).where(Contact.workspace_id == workspace.id, Contact.email == "lea@gmail.com")
    )
    assert contact.id == outcome.contact_id and not contact.is_anonymous
    assert contact.properties == {"team_size": "11-50"}
    page_view = session.scalar(select(Event).where(Event.workspace_id == workspace.id, Event.message_id == "pv-1"))
    assert page_view.contact_id == contact.id
    assert contact.first_touch_channel == "email"
    identity = session.scalar(
        select(ContactIdentity).where(ContactIdentity.workspace_id == workspace.id, ContactIdentity.value == "anon-42")
    )
    assert identity.contact_id == contact.id
    # A free-mail address links no company by domain, so the typed company name is used.
    company = session.get(Company, contact.company_id)
    assert company.name == "Sauna Oy"
    submitted = session.scalar(
        select(Event).where(
            Event.workspace_id == workspace.id, Event.contact_id == contact.id, Event.name == "Form Submitted"
        )
    )
    assert submitted.properties["form_slug"] == "demo"
    session.rollback()


def test_stage_moves_forward_only(session, workspace):
    define_team_size(session, workspace.id)
    form = make_form(session, workspace.id)
    first = capture_service.submit_form(
        session, form, capture_service.SubmissionInput(values={"email": "moa@example.se"})
    )
    contact = session.get(Contact, first.contact_id)
    contact.lifecycle_stage = "customer"
    session.flush()
    again = capture_service.submit_form(
        session, form, capture_service.SubmissionInput(values={"email": "moa@example.se"})
    )
    assert again.contact_id == first.contact_id and again.stage_changed_to is None
    moves = list(session.scalars(select(StageChange.to_stage).where(StageChange.contact_id == contact.id)))
    assert moves.count("interest") == 1 and session.get(Contact, contact.id).lifecycle_stage == "customer"
    session.rollback()


def test_field_errors_are_reported_by_field(session, workspace):
    define_team_size(session, workspace.id)
    form = make_form(session, workspace.id, consent_text="I agree", consent_version="v1", consent_required=True)
    with pytest.raises(capture_service.SubmissionInvalid) as caught:
        capture_service.submit_form(
            session, form, capture_service.SubmissionInput(values={"email": "x@", "size": "500+"})
        )
    assert caught.value.errors == {"email": "invalid_email", "size": "invalid_option", "consent": "consent_required"}
    assert caught.value.values["email"] == "x@"
    session.rollback()


def test_unknown_property_mapping_is_refused(session, workspace):
    from suppilo.errors import DomainError

    with pytest.raises(DomainError) as caught:
        make_form(session, workspace.id)
    assert caught.value.field == "fields[2].maps_to"
    session.rollback()


def test_sliding_window_limiter():
    now = [1000.0]
    limiter = SlidingWindowLimiter(2, 60.0, clock=lambda: now[0])
    assert limiter.hit("a")
    now[0] = 1030.0
    assert limiter.hit("a")
    assert not limiter.hit("a")
    assert limiter.hit("b")
    assert limiter.retry_after("a") == 30
    now[0] = 1059.5
    assert not limiter.hit("a")
    now[0] = 1060.5
    # The hit at 1000 has left the window; the one at 1030 has not.
    assert limiter.hit("a") and not limiter.hit("a")
    now[0] = 1200.0
    assert limiter.hit("a") and limiter.hit("a")
