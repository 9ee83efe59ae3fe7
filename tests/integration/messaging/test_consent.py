"""The consent ledger and per-country policies: double opt-in (EU, always DE), opt-out (US), CASL expiry,
objection, topics, form submissions, and the double-opt-in mail sent over real SMTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from suppilo.capture import service as capture_service
from suppilo.capture.schemas import CONSENT_FIELD, FormCreate
from suppilo.consent import service as consent_service
from suppilo.consent.models import ConsentRecord
from suppilo.db.base import utcnow
from suppilo.errors import DomainError
from suppilo.messaging import outbox
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.messaging.service import install_default_templates
from suppilo.workspaces.models import Workspace
from tests.integration.messaging.outbox_support import RENDERED, SmtpSink, add_contact, drain, make_sender

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _decide(factory, ws, cid, topic="marketing", now=NOW):
    with factory() as s:
        d = consent_service.can_send_marketing(s, ws, cid, topic, now)
        return d.allowed, d.reason


def _record(factory, ws, cid, **kw):
    with factory() as s:
        r = consent_service.record_consent(s, ws, cid, **kw)
        s.commit()
        return r.id


def test_germany_needs_a_confirmed_double_opt_in(session_factory, workspace):
    ws = workspace.id
    cid = add_contact(session_factory, ws, "anna@example.de", country="DE")
    assert _decide(session_factory, ws, cid) == (False, "no_consent")
    signup = _record(session_factory, ws, cid, source="form:newsletter", at=NOW - timedelta(days=1), ip="203.0.113.9")
    assert _decide(session_factory, ws, cid) == (False, "unconfirmed")
    # Soft opt-in does not count in Germany.
    _record(session_factory, ws, cid, legal_basis="legitimate_interest", at=NOW - timedelta(hours=20))
    assert _decide(session_factory, ws, cid)[0] is False
    with session_factory() as s:
        first = consent_service.confirm_double_opt_in(s, ws, signup, ip="203.0.113.9", at=NOW - timedelta(hours=1))
        again = consent_service.confirm_double_opt_in(s, ws, signup, at=NOW)
        assert first.id == again.id and first.confirms_id == signup
        s.commit()
    assert _decide(session_factory, ws, cid) == (True, "confirmed_consent")
    # The confirmation mail was queued once, transactional, for the template without advertising.
    with session_factory() as s:
        rows = list(
            s.scalars(select(OutboxMessage).where(OutboxMessage.workspace_id == ws, OutboxMessage.contact_id == cid))
        )
    assert [(r.template_key, r.kind, r.extra) for r in rows] == [
        ("double_opt_in", "transactional", {"confirm_consent_id": signup})
    ]


def test_eu_double_opt_in_is_a_workspace_default_that_can_be_relaxed_except_germany(session_factory, workspace):
    ws = workspace.id
    fi = add_contact(session_factory, ws, "aino@example.fi", country="FI")
    de = add_contact(session_factory, ws, "ben@example.de", country="DE")
    for cid in (fi, de):
        _record(session_factory, ws, cid, at=NOW - timedelta(days=1), request_double_opt_in=False)
    assert _decide(session_factory, ws, fi) == (False, "unconfirmed")
    with session_factory() as s:
        w = s.get(Workspace, ws)
        w.settings = {**w.settings, "eu_double_opt_in": False}
        s.commit()
    assert _decide(session_factory, ws, fi) == (True, "consent")
    assert _decide(session_factory, ws, de) == (False, "unconfirmed")


def test_us_is_opt_out(session_factory, workspace):
    ws = workspace.id
    cid = add_contact(session_factory, ws, "cal@example.com", country="US")
    assert _decide(session_factory, ws, cid) == (True, "opt_out_regime")
    _record(session_factory, ws, cid, action="withdrawn", at=NOW - timedelta(days=1))
    assert _decide(session_factory, ws, cid) == (False, "withdrawn")


@pytest.mark.parametrize(
    ("basis", "age_days", "allowed", "reason"),
    [
        ("implied_purchase", 729, True, "implied_purchase"),
        ("implied_purchase", 731, False, "implied_consent_expired"),
        ("implied_inquiry", 180, True, "implied_inquiry"),
        ("implied_inquiry", 184, False, "implied_consent_expired"),
        ("consent", 4000, True, "express_consent"),
        ("legitimate_interest", 10, False, "casl_basis_not_accepted"),
    ],
)
def test_casl_implied_consent_expires(session_factory, workspace, basis, age_days, allowed, reason):
    ws = workspace.id
    cid = add_contact(session_factory, ws, f"{basis}{age_days}@example.ca", country="CA")
    evidence = NOW - timedelta(days=age_days)
    _record(session_factory, ws, cid, legal_basis=basis, evidence_at=evidence, at=evidence)
    assert _decide(session_factory, ws, cid) == (allowed, reason)


def test_express_consent_is_not_downgraded_by_a_later_purchase(session_factory, workspace):
    ws = workspace.id
    cid = add_contact(session_factory, ws, "dora@example.ca", country="CA")
    _record(session_factory, ws, cid, at=NOW - timedelta(days=2000))
    _record(session_factory, ws, cid, legal_basis="implied_purchase", at=NOW - timedelta(days=1000))
    assert _decide(session_factory, ws, cid) == (True, "express_consent")


def test_objection_and_topic_withdrawal(session_factory, workspace):
    ws = workspace.id
    cid = add_contact(session_factory, ws, "eli@example.com", country="US")
    _record(session_factory, ws, cid, action="withdrawn", topic="offers", at=NOW - timedelta(days=1))
    assert _decide(session_factory, ws, cid, "offers") == (False, "withdrawn")
    assert _decide(session_factory, ws, cid, "newsletter") == (True, "opt_out_regime")
    _record(session_factory, ws, cid, action="objection", at=NOW - timedelta(hours=1))
    assert _decide(session_factory, ws, cid, "newsletter") == (False, "objection")
    # A later grant does not undo an objection: only the person's explicit new consent flow would.
    _record(session_factory, ws, cid, at=NOW - timedelta(minutes=1))
    assert _decide(session_factory, ws, cid) == (False, "objection")
    with session_factory() as s:
        assert consent_service.has_objection(s, ws, cid)
        assert consent_service.objecting_contacts(s, ws, [cid, cid + 10_000]) == {cid}


def test_invalid_records_are_refused(session_factory, workspace):
    cid = add_contact(session_factory, workspace.id, "fred@example.com")
    with session_factory() as s:
        with pytest.raises(DomainError) as exc:
            consent_service.record_consent(s, workspace.id, cid, legal_basis="because")
        assert exc.value.field == "legal_basis"
        with pytest.raises(DomainError):
            consent_service.record_consent(s, workspace.id, cid + 10_000)


def test_a_form_submission_with_consent_writes_the_ledger(session_factory, workspace):
    ws = workspace.id
    with session_factory() as s:
        form = capture_service.create_form(
            s,
            ws,
            FormCreate(
                slug="news",
                name="Newsletter",
                fields=[{"name": "email", "label": "Email", "type": "email", "required": True, "maps_to": "email"}],
                consent_text="Send me the newsletter.",
                consent_version="v2",
                consent_topic="newsletter",
            ),
        )
        out = capture_service.submit_form(
            s,
            form,
            capture_service.SubmissionInput(
                values={"email": "gia@example.fi", CONSENT_FIELD: "on"},
                page_url="https://shop.example.fi/join",
                ip="198.51.100.7",
                user_agent="Mozilla/5.0 (X11) Firefox",
            ),
        )
        s.commit()
    with session_factory() as s:
        (record,) = consent_service.list_records(s, ws, out.contact_id)
        assert (record.topic, record.action, record.legal_basis) == ("newsletter", "granted", "consent")
        assert (record.consent_text, record.consent_version, record.ip) == (
            "Send me the newsletter.",
            "v2",
            "198.51.100.7",
        )
        assert record.source == "form:news" and record.source_url == "https://shop.example.fi/join"
        assert record.confirmed_at is None  # the workspace is Finnish: double opt-in by default
        queued = s.scalar(
            select(OutboxMessage).where(OutboxMessage.workspace_id == ws, OutboxMessage.contact_id == out.contact_id)
        )
        assert queued.template_key == "double_opt_in" and queued.kind == "transactional"


def test_double_opt_in_mail_goes_out_with_a_working_confirm_link_and_no_unsubscribe(session_factory, workspace, client):
    ws = workspace.id
    with session_factory() as s:
        install_default_templates(s, ws)
        s.commit()
    cid = add_contact(session_factory, ws, "hilda@example.de", country="DE", language="en")
    _record(session_factory, ws, cid, source="api")
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        asyncio.run(drain(sender, transport))
    (received,) = sink.received
    msg = received.message
    assert msg["List-Unsubscribe"] is None and msg["X-Suppilo-Kind"] == "transactional"
    html = msg.get_body(("html",)).get_content()
    import re

    link = re.search(r'href="https://mail\.example\.test(/consent/confirm/[^"]+)"', html).group(1)
    assert _decide(session_factory, ws, cid, now=utcnow())[1] == "unconfirmed"
    assert client.post(link).status_code == 200
    assert _decide(session_factory, ws, cid, now=utcnow()) == (True, "confirmed_consent")
    # Marketing now reaches the confirmed contact.
    with session_factory() as s:
        outbox.enqueue(s, ws, dedupe_key="after-confirm", contact_id=cid, rendered=RENDERED)
        s.commit()
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        asyncio.run(drain(sender, transport))
    assert len(sink.received) == 1 and sink.received[0].message["List-Unsubscribe"]
    with session_factory() as s:
        records = list(
            s.scalars(select(ConsentRecord).where(ConsentRecord.workspace_id == ws, ConsentRecord.contact_id == cid))
        )
    assert [r.source for r in records] == ["api", "double_opt_in"]
