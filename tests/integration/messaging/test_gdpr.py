"""Data-subject rights through the API and the CLI: export, erasure (suppression hash stays), objection."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings
from suppilo.consent import service as consent_service
from suppilo.contacts.models import Contact, ContactTag
from suppilo.db.base import utcnow
from suppilo.events import service as events_service
from suppilo.events.models import Event
from suppilo.messaging import outbox, suppression
from suppilo.messaging.outbox_models import OutboxBody, OutboxMessage
from suppilo.workspaces.models import AuditLog
from tests.integration.messaging.outbox_support import RENDERED, add_contact


def _person(factory, ws, email_address="ada@example.com"):
    cid = add_contact(factory, ws, email_address, country="US", first_name="Ada", last_name="Lovelace", city="London")
    with factory() as s:
        s.add(ContactTag(workspace_id=ws, contact_id=cid, tag="vip"))
        events_service.record_event(s, ws, cid, "Viewed Product", {"sku": "tent-1", "email": email_address}, utcnow())
        consent_service.record_consent(s, ws, cid, source="form:x", ip="203.0.113.5", consent_text="Yes please")
        row = outbox.enqueue(s, ws, dedupe_key=f"gdpr:{cid}", contact_id=cid, rendered=RENDERED)
        row.status, row.to_address = "sent", email_address
        outbox.enqueue(s, ws, dedupe_key=f"gdpr-queued:{cid}", contact_id=cid, rendered=RENDERED)
        suppression.suppress(s, ws, email_address, "complaint")
        s.commit()
    return cid


def _audit(factory, ws, action):
    with factory() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.workspace_id == ws, AuditLog.action == action)))


def test_export_holds_everything_about_the_person(client, session_factory, workspace, other_workspace):
    cid = _person(session_factory, workspace.id)
    assert (
        client.get(f"/api/v1/contacts/{cid}/privacy/export", headers=other_workspace.auth("admin")).status_code == 404
    )
    assert client.get(f"/api/v1/contacts/{cid}/privacy/export", headers=workspace.auth("read")).status_code == 403
    res = client.get(f"/api/v1/contacts/{cid}/privacy/export", headers=workspace.auth("admin"))
    assert res.status_code == 200
    data = res.json()
    assert data["contact"]["email"] == "ada@example.com" and data["tags"] == ["vip"]
    assert [e["name"] for e in data["events"]] == ["Viewed Product"]
    assert data["consent_records"][0]["ip"] == "203.0.113.5"
    assert len(data["messages"]) == 2 and data["suppression"] == ["complaint"]
    assert [b["subject"] for b in data["message_bodies"]] == [RENDERED["subject"]] * 2
    for key in ("identities", "touches", "stage_changes", "orders", "form_submissions", "carts"):
        assert key in data
    assert [a.subject_id for a in _audit(session_factory, workspace.id, "privacy.export")] == [cid]


def test_erasure_removes_personal_data_and_keeps_the_suppression_hash(client, session_factory, workspace):
    ws = workspace.id
    cid = _person(session_factory, ws)
    with session_factory() as s:
        events_before = s.scalar(select(func.count()).where(Event.workspace_id == ws, Event.contact_id == cid))
    res = client.post(f"/api/v1/contacts/{cid}/privacy/erase", headers=workspace.auth("admin"))
    assert res.status_code == 200 and res.json()["counts"]["consent_records"] == 1
    with session_factory() as s:
        contact = s.get(Contact, cid)
        assert (contact.email, contact.first_name, contact.last_name, contact.city) == (None, None, None, None)
        events = list(s.scalars(select(Event).where(Event.workspace_id == ws, Event.contact_id == cid)))
        assert len(events) == events_before  # aggregate counts survive
        assert all(e.properties == {} and e.context == {} for e in events)
        messages = list(
            s.scalars(select(OutboxMessage).where(OutboxMessage.workspace_id == ws, OutboxMessage.contact_id == cid))
        )
        assert sorted(m.status for m in messages) == ["sent", "skipped"]
        assert all(m.to_address is None for m in messages)
        assert s.scalar(select(func.count()).where(OutboxBody.workspace_id == ws)) == 0  # the content is gone
        assert consent_service.list_records(s, ws, cid) == []
        assert suppression.check(s, ws, "ADA@example.com") == "complaint"  # the hash outlives the person
        blob = json.dumps([[e.properties, e.context] for e in events] + [m.to_address for m in messages])
        assert "ada@example.com" not in blob
    (entry,) = _audit(session_factory, ws, "privacy.erase")
    assert entry.subject_id == cid and entry.details["counts"]["messages_skipped"] == 1


def test_objection_stops_marketing_and_is_audited(client, session_factory, workspace):
    ws = workspace.id
    cid = add_contact(session_factory, ws, "ben@example.com", country="US")
    with session_factory() as s:
        outbox.enqueue(s, ws, dedupe_key="m", contact_id=cid, rendered=RENDERED)
        outbox.enqueue(s, ws, dedupe_key="t", contact_id=cid, rendered=RENDERED, kind="transactional")
        s.commit()
    assert client.post(f"/api/v1/contacts/{cid}/privacy/object", headers=workspace.auth("admin")).status_code == 200
    decision = client.get(f"/api/v1/contacts/{cid}/consent/decision", headers=workspace.auth("read")).json()
    assert decision == {
        "contact_id": cid,
        "topic": "marketing",
        "allowed": False,
        "reason": "objection",
        "regime": "opt_out",
    }
    with session_factory() as s:
        statuses = dict(
            s.execute(
                select(OutboxMessage.dedupe_key, OutboxMessage.status).where(OutboxMessage.workspace_id == ws)
            ).all()
        )
        assert consent_service.has_objection(s, ws, cid)
    assert statuses == {"m": "skipped", "t": "queued"}
    assert len(_audit(session_factory, ws, "privacy.object")) == 1


@pytest.fixture
def cli(monkeypatch, database_url, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_privacy_cli_export_object_erase_by_email(cli, session_factory, workspace):
    ws = workspace.id
    cid = _person(session_factory, ws, "cleo@example.com")
    out = cli.invoke(cli_app, ["privacy", "export", "--email", "Cleo@Example.com", "--workspace", workspace.slug])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["contact"]["id"] == cid
    out = cli.invoke(cli_app, ["privacy", "object", "--contact", str(cid), "--workspace", workspace.slug, "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["contact_id"] == cid
    out = cli.invoke(
        cli_app, ["privacy", "erase", "--contact", str(cid), "--yes", "--workspace", workspace.slug, "--json"]
    )
    assert out.exit_code == 0, out.output
    with session_factory() as s:
        assert s.get(Contact, cid).email is None
    missing = cli.invoke(cli_app, ["privacy", "export", "--email", "nobody@example.com", "--workspace", workspace.slug])
    assert missing.exit_code == 1
    assert [len(_audit(session_factory, ws, a)) for a in ("privacy.export", "privacy.object", "privacy.erase")] == [
        1,
        1,
        1,
    ]


def test_outbox_cli_reports_and_resends_uncertain(cli, session_factory, workspace):
    ws = workspace.id
    cid = add_contact(session_factory, ws, "dina@example.com", country="US")
    with session_factory() as s:
        row = outbox.enqueue(s, ws, dedupe_key="u", contact_id=cid, rendered=RENDERED)
        row.status = "uncertain"
        s.commit()
        mid = row.id
    out = cli.invoke(cli_app, ["outbox", "uncertain", "--workspace", workspace.slug, "--json"])
    assert out.exit_code == 0 and [r["id"] for r in json.loads(out.stdout)] == [mid]
    out = cli.invoke(cli_app, ["outbox", "resend", str(mid), "--workspace", workspace.slug, "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout) == {"id": mid, "status": "queued"}
    assert cli.invoke(cli_app, ["outbox", "resend", str(mid), "--workspace", workspace.slug]).exit_code == 1
    assert len(_audit(session_factory, ws, "outbox.resend")) == 1


def test_erasure_removes_the_referral_code_reviews_and_survey_comments(session_factory, workspace):
    from sqlalchemy import select

    from suppilo.advocacy import service as advocacy_service
    from suppilo.advocacy.models import ReferralCode, Review, SurveyResponse
    from suppilo.advocacy.schemas import ReviewCreate
    from suppilo.messaging.gdpr import erase_contact

    cid = add_contact(session_factory, workspace.id, "fan@example.com", country="US")
    with session_factory() as s:
        advocacy_service.get_or_create_code(s, workspace.id, cid)
        advocacy_service.create_review(s, workspace.id, ReviewCreate(contact_id=cid, rating=5, text="Love it, Anna"))
        s.commit()
    from suppilo.messaging.gdpr import export_contact

    with session_factory() as s:
        exported = export_contact(s, workspace.id, cid)
        assert len(exported["referral_code"]) == 1 and exported["reviews"][0]["text"] == "Love it, Anna"
        assert {"journey_enrollments", "coupons", "loyalty_points", "referrals", "survey_answers"} <= set(exported)
        json.dumps(exported, default=str)
        counts = erase_contact(s, workspace.id, cid)
        s.commit()
        assert counts["referral_codes"] == 1 and counts["reviews"] == 1
        assert s.scalar(select(ReferralCode).where(ReferralCode.contact_id == cid)) is None
        assert s.scalar(select(Review).where(Review.contact_id == cid)) is None
        assert all(r.comment is None for r in s.scalars(select(SurveyResponse).where(SurveyResponse.contact_id == cid)))


def test_export_and_erasure_cover_the_sales_record(client, session_factory, workspace):
    from datetime import timedelta

    from suppilo.deals import service as deals_service
    from suppilo.deals.models import Activity, DealContact
    from suppilo.deals.schemas import ActivityCreate, DealContactIn, DealCreate, TaskCreate

    ws = workspace.id
    cid = add_contact(session_factory, ws, "eva@example.com")
    buyer = add_contact(session_factory, ws, "cfo@example.com")
    with session_factory() as s:
        deal = deals_service.create_deal(s, ws, DealCreate(name="Tents for the club", contact_id=buyer))
        deals_service.add_deal_contact(s, ws, deal.id, DealContactIn(contact_id=cid, role="champion"))
        own = deals_service.create_deal(s, ws, DealCreate(name="Eva's own order", contact_id=cid))
        deals_service.create_task(
            s, ws, TaskCreate(title="Call back", contact_id=cid, due_at=utcnow() + timedelta(days=1))
        )
        deals_service.create_activity(
            s, ws, ActivityCreate(kind="call", body="Eva said her knee hurts after hikes", contact_id=cid)
        )
        deal_id, own_id = deal.id, own.id
        s.commit()
    data = client.get(f"/api/v1/contacts/{cid}/privacy/export", headers=workspace.auth("admin")).json()
    assert [d["id"] for d in data["deals"]] == [own_id]
    assert [(r["deal_id"], r["role"]) for r in data["deal_roles"]] == [(deal_id, "champion")]
    assert [t["title"] for t in data["tasks"]] == ["Call back"]
    assert [a["body"] for a in data["activities"]] == ["Eva said her knee hurts after hikes"]

    res = client.post(f"/api/v1/contacts/{cid}/privacy/erase", headers=workspace.auth("admin"))
    assert res.status_code == 200
    assert res.json()["counts"]["activity_notes"] == 1 and res.json()["counts"]["deal_roles"] == 1
    with session_factory() as s:
        (activity,) = s.scalars(select(Activity).where(Activity.workspace_id == ws, Activity.contact_id == cid))
        assert activity.body == "" and activity.kind == "call"  # the call still counts, its notes are gone
        assert s.scalar(select(func.count()).where(DealContact.workspace_id == ws)) == 0
