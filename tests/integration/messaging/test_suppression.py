"""Suppression by hashed normalised address (variants and IDN forms match), and bounces/complaints arriving as
RFC 3464 DSNs and ARF reports over a real SMTP connection to the DSN endpoint, applied once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiosmtplib
from aiosmtpd.controller import Controller
from sqlalchemy import select

from suppilo.db.base import utcnow
from suppilo.events.models import Event
from suppilo.messaging import outbox, suppression
from suppilo.messaging.dsn import DsnHandler, parse_report
from suppilo.messaging.outbox_models import OutboxMessage, SuppressionEntry
from tests.integration.messaging.outbox_support import RENDERED, add_contact, free_port


def test_variants_and_idn_forms_share_one_entry(session_factory, workspace):
    ws = workspace.id
    with session_factory() as s:
        assert suppression.suppress(s, ws, "Alice@EXAMPLE.com", "unsubscribe")
        assert not suppression.suppress(s, ws, " alice@example.COM", "unsubscribe")
        assert suppression.suppress(s, ws, "jörg@bücher.de", "hard_bounce")
        s.commit()
        assert suppression.check(s, ws, "alice@example.com") == "unsubscribe"
        assert suppression.check(s, ws, "alice@example.com", "transactional") is None
        assert suppression.check(s, ws, "JÖRG@xn--bcher-kva.de", "transactional") == "hard_bounce"
        assert suppression.check(s, ws, "alicia@example.com") is None
        stored = list(s.scalars(select(SuppressionEntry.address_hash).where(SuppressionEntry.workspace_id == ws)))
    assert len(stored) == 2 and all(len(h) == 64 and "@" not in h for h in stored)


def test_suppression_is_per_workspace(session_factory, workspace, other_workspace):
    with session_factory() as s:
        suppression.suppress(s, workspace.id, "bob@example.com", "complaint")
        s.commit()
        assert suppression.check(s, other_workspace.id, "bob@example.com") is None


def _sent(factory, ws, email_address):
    cid = add_contact(factory, ws, email_address, country="US")
    with factory() as s:
        row = outbox.enqueue(s, ws, dedupe_key=f"dsn:{cid}", contact_id=cid, rendered=RENDERED)
        row.status, row.to_address, row.sent_at = "sent", email_address, utcnow() - timedelta(minutes=5)
        row.message_id = f"<outbox-{row.id}.ws@shop.example.fi>"
        s.commit()
        return cid, row.id, row.message_id


def _dsn(message_id: str, recipient: str, action: str, status: str, dsn_id: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.com\r\n"
        "To: bounces@shop.example.fi\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{dsn_id}@mx.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nFrom: news@shop.example.fi\r\nTo: {recipient}\r\nSubject: Spring sale\r\n"
        "\r\n--B--\r\n"
    ).encode()


def _arf(message_id: str, recipient: str) -> bytes:
    return (
        "From: feedback@isp.example\r\nTo: bounces@shop.example.fi\r\nSubject: complaint\r\n"
        "Message-ID: <arf-1@isp.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n'
        "\r\n--F\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nUser-Agent: isp/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: {recipient}\r\n"
        "\r\n--F\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nFrom: news@shop.example.fi\r\n\r\n--F--\r\n"
    ).encode()


def test_parse_report_reads_permanent_and_temporary_failures():
    (hard,) = parse_report(_dsn("<outbox-1.a@x>", "a@example.com", "failed", "5.1.1", "d1"))
    assert (hard.kind, hard.recipient, hard.status, hard.original_message_id) == (
        "bounce",
        "a@example.com",
        "5.1.1",
        "<outbox-1.a@x>",
    )
    (soft,) = parse_report(_dsn("<outbox-1.a@x>", "a@example.com", "delayed", "4.2.2", "d2"))
    assert soft.kind == "soft_bounce"
    assert parse_report(b"From: a@b\r\nSubject: hi\r\n\r\nnot a report") == []


def test_dsns_and_complaints_over_smtp_are_applied_once(session_factory, workspace):
    ws = workspace.id
    cid_hard, id_hard, mid_hard = _sent(session_factory, ws, "gone@example.com")
    cid_soft, id_soft, mid_soft = _sent(session_factory, ws, "full@example.com")
    cid_arf, id_arf, mid_arf = _sent(session_factory, ws, "angry@example.com")
    handler = DsnHandler(session_factory)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:

        async def deliver() -> None:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
                for _ in range(3):  # the same report delivered three times
                    await smtp.sendmail(
                        "", ["bounces@shop.example.fi"], _dsn(mid_hard, "gone@example.com", "failed", "5.1.1", "h1")
                    )
                await smtp.sendmail(
                    "", ["bounces@shop.example.fi"], _dsn(mid_soft, "full@example.com", "delayed", "4.2.2", "s1")
                )
                await smtp.sendmail("", ["bounces@shop.example.fi"], _arf(mid_arf, "angry@example.com"))

        asyncio.run(deliver())
    finally:
        controller.stop()
    assert handler.applied == 3
    with session_factory() as s:
        assert s.get(OutboxMessage, id_hard).delivery_status == "bounced"
        assert s.get(OutboxMessage, id_soft).delivery_status == "soft_bounced"
        assert s.get(OutboxMessage, id_arf).delivery_status == "complained"
        assert suppression.check(s, ws, "gone@example.com", "transactional") == "hard_bounce"
        assert suppression.check(s, ws, "full@example.com") is None
        assert suppression.check(s, ws, "angry@example.com") == "complaint"
        names = {
            cid: sorted(s.scalars(select(Event.name).where(Event.workspace_id == ws, Event.contact_id == cid)))
            for cid in (cid_hard, cid_soft, cid_arf)
        }
    assert names == {cid_hard: ["email_bounced"], cid_soft: ["email_bounced"], cid_arf: ["email_complained"]}
