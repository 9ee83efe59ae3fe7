"""The sender over a real SMTP server: headers, DKIM, tracking, consent and suppression at send, retries,
uncertain rows after a crash, fencing."""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import timedelta

import dkim
import pytest
from sqlalchemy import select

from suppilo.companies.models import Company
from suppilo.contacts import properties as contact_properties
from suppilo.contacts.schemas import PropertyDefinitionCreate
from suppilo.db.base import utcnow
from suppilo.events.models import Event
from suppilo.messaging import outbox, suppression
from suppilo.messaging import service as templates_service
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.messaging.schemas import TemplateCreate, VariantCreate
from suppilo.messaging.sender import Outcome, Prepared
from tests.integration.messaging.outbox_support import (
    PUBLIC_URL,
    RENDERED,
    SmtpSink,
    add_contact,
    drain,
    make_sender,
    rsa_key_pair,
)


def _enqueue(factory, ws_id, key, contact_id, **kw):
    with factory() as s:
        row = outbox.enqueue(
            s, ws_id, dedupe_key=key, contact_id=contact_id, rendered=kw.pop("rendered", RENDERED), **kw
        )
        s.commit()
        return row.id if row else None


def _row(factory, row_id):
    with factory() as s:
        return s.get(OutboxMessage, row_id)


def test_marketing_mail_is_signed_with_unsubscribe_headers_and_tracked_links(session_factory, workspace, tmp_path):
    private, public = rsa_key_pair(tmp_path)
    cid = add_contact(session_factory, workspace.id, "alice@example.com", country="US")
    mid = _enqueue(session_factory, workspace.id, "broadcast:1:contact:1", cid)
    assert _enqueue(session_factory, workspace.id, "broadcast:1:contact:1", cid) is None  # one row per cause
    with SmtpSink() as sink:
        sender, transport = make_sender(
            session_factory,
            sink,
            workspace.id,
            dkim_selector="s1",
            dkim_domain="shop.example.fi",
            dkim_private_key_pem=private,
        )
        stats = asyncio.run(drain(sender, transport))
    assert stats.sent == 1
    assert len(sink.received) == 1
    got = sink.received[0]
    assert got.mail_from == "bounces@shop.example.fi" and got.rcpt_tos == ["alice@example.com"]
    msg = got.message
    assert f"outbox-{mid}." in msg["Message-ID"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.fullmatch(
        rf"<{re.escape(PUBLIC_URL)}/u/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+>, "
        r"<mailto:unsubscribe@shop\.example\.fi\?subject=unsubscribe>",
        msg["List-Unsubscribe"].strip(),
    )
    key_b64 = b"".join(line for line in public.splitlines() if not line.startswith(b"-----"))
    assert dkim.verify(got.data, dnsfunc=lambda name, timeout=5: b"v=DKIM1; k=rsa; p=" + key_b64)
    signed = re.search(rb"h=([^;]+);", got.data.replace(b"\r\n\t", b"").replace(b"\r\n ", b"")).group(1).lower()
    assert b"list-unsubscribe" in signed and b"list-unsubscribe-post" in signed
    html = msg.get_body(("html",)).get_content()
    assert f"{PUBLIC_URL}/c/" in html and "shop.example.fi/sale" not in html
    assert f"{PUBLIC_URL}/o/" in html
    row = _row(session_factory, mid)
    assert row.status == "sent" and row.sent_at is not None and row.attempts == 1
    assert row.links == ["https://shop.example.fi/sale?a=1&b=2"]
    assert row.message_id == msg["Message-ID"]
    with session_factory() as s:
        names = list(s.scalars(select(Event.name).where(Event.workspace_id == workspace.id, Event.contact_id == cid)))
    assert names == ["email_sent"]


def test_consent_and_suppression_are_checked_again_at_send(session_factory, workspace):
    ws = workspace.id
    unconsented = add_contact(session_factory, ws, "bob@example.fi", country="FI")
    unsubscribed = add_contact(session_factory, ws, "carol@example.com", country="US")
    bounced = add_contact(session_factory, ws, "dave@example.com", country="US")
    ok = add_contact(session_factory, ws, "erin@example.com", country="US")
    ids = {
        "unconsented": _enqueue(session_factory, ws, "k1", unconsented),
        "unsub_marketing": _enqueue(session_factory, ws, "k2", unsubscribed),
        "unsub_transactional": _enqueue(session_factory, ws, "k3", unsubscribed, kind="transactional"),
        "bounced_transactional": _enqueue(session_factory, ws, "k4", bounced, kind="transactional"),
        "ok": _enqueue(session_factory, ws, "k5", ok),
    }
    # Suppressed after queueing, through variants of the address.
    with session_factory() as s:
        suppression.suppress(s, ws, "Carol@EXAMPLE.com", "unsubscribe")
        suppression.suppress(s, ws, " DAVE@example.COM ", "hard_bounce")
        s.commit()
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        asyncio.run(drain(sender, transport))
    status = {k: _row(session_factory, v).status for k, v in ids.items()}
    assert status == {
        "unconsented": "skipped",
        "unsub_marketing": "suppressed",
        "unsub_transactional": "sent",
        "bounced_transactional": "suppressed",
        "ok": "sent",
    }
    assert sorted(r.rcpt_tos[0] for r in sink.received) == ["carol@example.com", "erin@example.com"]
    assert _row(session_factory, ids["unconsented"]).last_error == "consent: no_consent"
    # The transactional mail carries no unsubscribe header.
    transactional = next(r for r in sink.received if r.rcpt_tos == ["carol@example.com"]).message
    assert transactional["List-Unsubscribe"] is None


def test_4xx_is_retried_with_backoff_and_5xx_fails(session_factory, workspace):
    ws = workspace.id
    soft = add_contact(session_factory, ws, "soft@example.com", country="US")
    hard = add_contact(session_factory, ws, "hard@example.com", country="US")
    soft_id = _enqueue(session_factory, ws, "soft", soft)
    hard_id = _enqueue(session_factory, ws, "hard", hard)
    with SmtpSink() as sink:
        sink.handler.replies = {"soft@example.com": "451 4.7.1 try later", "hard@example.com": "550 5.1.1 no such user"}
        sender, transport = make_sender(session_factory, sink, ws, backoff_base=120)
        before = utcnow()
        asyncio.run(drain(sender, transport))
        row = _row(session_factory, soft_id)
        assert row.status == "deferred" and row.attempts == 1 and "451" in row.last_error
        assert row.next_attempt_at >= before + timedelta(seconds=119)
        failed = _row(session_factory, hard_id)
        assert failed.status == "failed" and "550" in failed.last_error
        # When the retry is due and the server accepts, it is sent (attempt 2).
        sink.handler.replies = {}
        with session_factory() as s:
            s.get(OutboxMessage, soft_id).next_attempt_at = utcnow()
            s.commit()
        sender, transport = make_sender(session_factory, sink, ws, backoff_base=120)
        asyncio.run(drain(sender, transport))
    row = _row(session_factory, soft_id)
    assert row.status == "sent" and row.attempts == 2
    assert [r.rcpt_tos for r in sink.received] == [["soft@example.com"]]


def test_a_row_left_sending_becomes_uncertain_and_is_resent_only_on_request(session_factory, workspace):
    ws = workspace.id
    cid = add_contact(session_factory, ws, "frank@example.com", country="US")
    mid = _enqueue(session_factory, ws, "crashed", cid)
    with session_factory() as s:
        row = s.get(OutboxMessage, mid)
        row.status, row.lease_token = "sending", "dead-sender"
        row.lease_expires_at = utcnow() - timedelta(seconds=1)
        s.commit()
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        stats = asyncio.run(drain(sender, transport))
        assert stats.uncertain >= 1
        assert _row(session_factory, mid).status == "uncertain"
        assert sink.received == []
        with session_factory() as s:
            assert [r.id for r in outbox.list_uncertain(s, ws)] == [mid]
            outbox.resend(s, ws, mid, actor="test")
            s.commit()
        sender, transport = make_sender(session_factory, sink, ws)
        asyncio.run(drain(sender, transport))
    assert _row(session_factory, mid).status == "sent"
    assert len(sink.received) == 1


def test_a_stale_claim_cannot_overwrite_a_newer_state(session_factory, workspace):
    ws = workspace.id
    cid = add_contact(session_factory, ws, "gina@example.com", country="US")
    mid = _enqueue(session_factory, ws, "fenced", cid)
    with session_factory() as s:
        row = s.get(OutboxMessage, mid)
        row.status, row.lease_token = "uncertain", "old-token"
        s.commit()
    with SmtpSink() as sink:
        sender, _ = make_sender(session_factory, sink, ws)
        prepared = Prepared(mid, ws, cid, "old-token", "gina@example.com", "example.com", b"")
        sender.finish([Outcome(prepared, "sent")])
    assert _row(session_factory, mid).status == "uncertain"
    assert sender.stats.fenced == 1


def test_one_failing_render_fails_only_that_message(session_factory, workspace):
    ws = workspace.id
    a = add_contact(session_factory, ws, "hank@example.com", country="US")
    b = add_contact(session_factory, ws, "ivy@example.com", country="US")
    bad = _enqueue(session_factory, ws, "bad", a, rendered=None, template_key="no_such_template")
    good = _enqueue(session_factory, ws, "good", b)
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        asyncio.run(drain(sender, transport))
    assert _row(session_factory, bad).status == "failed"
    assert "build" in _row(session_factory, bad).last_error
    assert _row(session_factory, good).status == "sent"
    assert len(sink.received) == 1


@pytest.mark.parametrize("n", [250])
def test_many_messages_each_arrive_once(session_factory, workspace, n):
    ws = workspace.id
    ids = [add_contact(session_factory, ws, f"p{i}@example.com", country="US") for i in range(n)]
    with session_factory() as s:
        outbox.enqueue_many(
            s, ws, [{"dedupe_key": f"bulk:{cid}", "contact_id": cid, "rendered": RENDERED} for cid in ids]
        )
        s.commit()
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws, chunk_size=40, concurrency=8)
        stats = asyncio.run(drain(sender, transport))
    assert stats.sent == n
    counts = sink.by_message_id()
    assert len(counts) == n and set(counts.values()) == {1}
    with session_factory() as s:
        assert outbox.counts(s, ws) == {"sent": n}


def test_a_row_naming_a_contact_of_another_workspace_goes_to_nobody(session_factory, workspace, other_workspace):
    """The claim reads each row's contact in the row's own workspace: a contact id of another tenant is no
    recipient (skipped), and that tenant's contact gets nothing."""
    ws = workspace.id
    own = add_contact(session_factory, ws, "own@example.com", country="US")
    foreign = add_contact(session_factory, other_workspace.id, "foreign@example.com", country="US")
    mid = _enqueue(session_factory, ws, "cross", own)
    ok = _enqueue(session_factory, ws, "fine", own, kind="transactional")
    with session_factory() as s:
        s.get(OutboxMessage, mid).contact_id = foreign
        s.commit()
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        stats = asyncio.run(drain(sender, transport))
    assert [r.rcpt_tos for r in sink.received] == [["own@example.com"]]
    row = _row(session_factory, mid)
    assert (row.status, row.last_error) == ("skipped", "the contact has no email address")
    assert _row(session_factory, ok).status == "sent" and stats.sent == 1 and stats.skipped == 1
    with session_factory() as s:
        events = s.execute(
            select(Event.contact_id, Event.properties, Event.context, Event.message_id).where(
                Event.name == "email_sent", Event.workspace_id.in_([ws, other_workspace.id])
            )
        ).all()
    assert [tuple(e) for e in events] == [(own, {"outbox_id": ok}, {"source": "system"}, f"mail-sent-{ok}")]


class _RecordingTransport:
    """Accepts every message and notes the interpreter's thread switch interval at each send."""

    def __init__(self) -> None:
        self.intervals: list[float] = []

    async def send(self, envelope_from, recipients, message_bytes) -> None:
        self.intervals.append(sys.getswitchinterval())

    async def close(self) -> None:
        pass


def test_the_switch_interval_is_lowered_while_sending_and_restored_after(session_factory, workspace):
    ws = workspace.id
    for i in range(3):
        cid = add_contact(session_factory, ws, f"s{i}@example.com", country="US")
        _enqueue(session_factory, ws, f"switch:{i}", cid)
    before = sys.getswitchinterval()
    transport = _RecordingTransport()
    with SmtpSink() as sink:
        sender, _ = make_sender(session_factory, sink, ws, switch_interval=0.0002)
    sender.transport = transport
    stats = asyncio.run(sender.run(until_empty=True, max_seconds=30))
    assert stats.sent == 3
    assert transport.intervals == [pytest.approx(min(before, 0.0002))] * 3
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize(
    ("subject", "from_name", "html"),
    [
        ("Spring sale", "Pohjola Outdoor", RENDERED["html"]),
        ("Kevät on täällä – ale alkaa ✓", "Kauppa Åbo, Oy", "<p>Hyvää kevättä! " + "pitkä rivi " * 40 + "</p>"),
        ("A very long subject line " * 6, None, None),
        (".leading dot\tand tab", 'Name "quoted" <x>', "<p>\n.line starting with a dot\n</p>"),
    ],
)
def test_fast_message_bytes_match_build_message(subject, from_name, html):
    import email
    import email.policy
    from datetime import UTC, datetime

    from suppilo.messaging import mime
    from suppilo.messaging.sender import _header, fast_message_bytes

    headers = {
        "List-Unsubscribe": "<https://mail.example.test/u/abc.def>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    common = dict(
        outbox_id=7,
        workspace_slug="ws-1",
        domain="shop.example.fi",
        to_email="bob@example.com",
        subject=subject,
        text="Hello\nsecond line",
        html=html,
        reply_to="help@shop.example.fi",
        headers=headers,
        date=datetime(2025, 5, 1, 12, tzinfo=UTC),
    )
    address = mime.make_address("from", "news@shop.example.fi", from_name)
    from email.utils import formataddr

    value = formataddr((from_name, address.addr_spec), charset="utf-8") if from_name else address.addr_spec
    fast = fast_message_bytes(from_header=_header("From", value).decode(), **common)
    slow = mime.message_bytes(mime.build_message(from_email="news@shop.example.fi", from_name=from_name, **common))
    a = email.message_from_bytes(fast, policy=email.policy.default)
    b = email.message_from_bytes(slow, policy=email.policy.default)
    for name in (
        "Message-ID",
        "Date",
        "From",
        "To",
        "Reply-To",
        "Subject",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ):
        assert str(a[name]) == str(b[name]), name
    assert a.get_content_type() == b.get_content_type()
    assert a.get_body(("plain",)).get_content() == b.get_body(("plain",)).get_content()
    if html is not None:
        assert a.get_body(("html",)).get_content() == b.get_body(("html",)).get_content()
    assert all(len(line) <= 998 for line in fast.split(b"\r\n"))
    assert b"\n" not in fast.replace(b"\r\n", b"")


def test_fast_message_bytes_refuse_header_injection():
    from datetime import UTC, datetime

    from suppilo.errors import DomainError
    from suppilo.messaging.sender import fast_message_bytes

    with pytest.raises(DomainError):
        fast_message_bytes(
            outbox_id=1,
            workspace_slug="w",
            domain="d.example",
            from_header="From: a@b.example\r\n",
            to_email="x@example.com",
            subject="Hi\r\nBcc: victim@example.com",
            text="t",
            html=None,
            reply_to=None,
            headers={},
            date=datetime.now(UTC),
        )


def test_template_messages_render_with_the_contact_and_company_read_by_the_claim(session_factory, workspace):
    """The claim reads template contexts on the driver cursor: the sent text and HTML equal what
    ``render_for_contact`` (the ORM path) gives, company and custom properties included."""
    ws = workspace.id
    with session_factory() as s:
        company = Company(workspace_id=ws, name="Kauppa & Co", name_lower="kauppa & co", industry="retail")
        s.add(company)
        s.flush()
        company_id = company.id
        contact_properties.create_definition(
            s, ws, PropertyDefinitionCreate(object_type="contact", name="plan", type="string")
        )
        template = templates_service.create_template(
            s,
            ws,
            TemplateCreate(
                key="ctx",
                kind="transactional",
                variants=[
                    VariantCreate(
                        language="en",
                        subject="Hi {{ contact.full_name }}",
                        html="<p>{{ contact.first_name }} at {{ company.name }} ({{ company.industry }}), plan "
                        "{{ contact.properties.plan }} / {{ contact.plan }}</p>",
                    )
                ],
            ),
        )
        templates_service.publish_template(s, ws, template.id)
        s.commit()
    with_company = add_contact(
        session_factory, ws, "kim@example.com", first_name="Kim <K>", last_name="Lee", company_id=company_id,
        properties={"plan": "gold", "_hidden": "secret"}, language="en",
    )  # fmt: skip
    alone = add_contact(session_factory, ws, "ada@example.com", first_name="Ada", language="en")
    for cid in (with_company, alone):
        _enqueue(session_factory, ws, f"ctx:{cid}", cid, rendered=None, template_key="ctx", kind="transactional")
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, ws)
        stats = asyncio.run(drain(sender, transport))
    assert stats.sent == 2
    got = {r.rcpt_tos[0]: r.message for r in sink.received}
    with session_factory() as s:
        for cid, address in ((with_company, "kim@example.com"), (alone, "ada@example.com")):
            expected = templates_service.render_for_contact(s, ws, "ctx", cid)
            msg = got[address]
            assert msg["Subject"] == expected.subject
            assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == expected.text
            assert msg.get_body(("html",)).get_content().replace("\r\n", "\n").rstrip("\n") == expected.html
    assert (
        got["kim@example.com"].get_body(("plain",)).get_content().replace("\r\n", "\n")
    ) == "Kim <K> at Kauppa & Co (retail), plan gold / gold\n"


def test_two_senders_draining_one_queue_send_each_message_once(session_factory, workspace):
    """Two senders claim the same queue at the same time (PostgreSQL: ``FOR UPDATE OF o SKIP LOCKED`` on the joined
    claim; SQLite: one writer at a time): every message is sent once, by one of them, and every row ends sent."""
    ws = workspace.id
    ids = [add_contact(session_factory, ws, f"twice{i}@example.com", country="US") for i in range(300)]
    with session_factory() as s:
        outbox.enqueue_many(
            s, ws, [{"dedupe_key": f"two:{cid}", "contact_id": cid, "rendered": RENDERED} for cid in ids]
        )
        s.commit()
    with SmtpSink() as sink:
        first = make_sender(session_factory, sink, ws, chunk_size=25, concurrency=4)
        second = make_sender(session_factory, sink, ws, chunk_size=25, concurrency=4)

        async def both():
            return await asyncio.gather(drain(*first), drain(*second))

        stats = asyncio.run(both())
    assert sum(st.sent for st in stats) == 300, [st.sent for st in stats]
    counts = sink.by_message_id()
    assert len(counts) == 300 and set(counts.values()) == {1}
    with session_factory() as s:
        assert outbox.counts(s, ws) == {"sent": 300}
        sent_events = s.scalars(
            select(Event.message_id).where(Event.workspace_id == ws, Event.name == "email_sent")
        ).all()
    assert len(sent_events) == len(set(sent_events)) == 300
