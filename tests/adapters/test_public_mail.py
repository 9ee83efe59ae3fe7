"""Public mail endpoints over HTTP: one-click unsubscribe without cookies, the preference page that never
unsubscribes by itself, forged tokens, click redirects only to stored URLs, machine opens, the signed webhook."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from suppilo.consent import service as consent_service
from suppilo.db.base import utcnow
from suppilo.events.models import Event
from suppilo.messaging import dsn, outbox, suppression, tracking, unsubscribe
from suppilo.messaging.outbox_models import OutboxMessage
from tests.integration.messaging.outbox_support import RENDERED, add_contact

SECRET = "test-secret-" + "x" * 32  # the app's secret in tests/conftest.py


def _sent_message(factory, ws_id, email_address="alice@example.com", *, sent_ago=3600, links=None):
    cid = add_contact(factory, ws_id, email_address, country="US")
    with factory() as s:
        row = outbox.enqueue(s, ws_id, dedupe_key=f"t:{cid}", contact_id=cid, rendered=RENDERED)
        row.status = "sent"
        row.to_address = email_address
        row.sent_at = utcnow() - timedelta(seconds=sent_ago)
        row.message_id = f"<outbox-{row.id}.x@shop.example.fi>"
        row.links = links if links is not None else ["https://shop.example.fi/sale?a=1&b=2"]
        s.commit()
        return cid, row.id


def _events(factory, ws_id, cid, name):
    with factory() as s:
        return list(
            s.scalars(select(Event).where(Event.workspace_id == ws_id, Event.contact_id == cid, Event.name == name))
        )


def _suppressed(factory, ws_id, email_address):
    with factory() as s:
        return suppression.check(s, ws_id, email_address, "marketing")


def test_one_click_post_unsubscribes_at_once_without_cookies(app, session_factory, workspace):
    cid, mid = _sent_message(session_factory, workspace.id)
    token = unsubscribe.unsubscribe_token(SECRET, workspace.id, cid, mid, utcnow())
    with TestClient(app, cookies=None) as client:
        # A GET (what a link scanner does) shows the page but changes nothing.
        page = client.get(f"/u/{token}")
        assert page.status_code == 200 and "Unsubscribe from all marketing mail" in page.text
        assert "newsletter" in page.text.lower()
        assert _suppressed(session_factory, workspace.id, "alice@example.com") is None
        # RFC 8058: POST with List-Unsubscribe=One-Click, no cookies, no login.
        res = client.post(
            f"/u/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert res.status_code == 200
        assert not client.cookies
    assert _suppressed(session_factory, workspace.id, "ALICE@example.com") == "unsubscribe"
    assert len(_events(session_factory, workspace.id, cid, "email_unsubscribed")) == 1
    with session_factory() as s:
        decision = consent_service.can_send_marketing(s, workspace.id, cid)
    assert (decision.allowed, decision.reason) == (False, "withdrawn")


def test_forged_and_altered_unsubscribe_tokens_change_nothing(client, session_factory, workspace, other_workspace):
    cid, mid = _sent_message(session_factory, workspace.id, "bob@example.com")
    good = unsubscribe.unsubscribe_token(SECRET, workspace.id, cid, mid, utcnow())
    head, mac = good.split(".")
    altered_payload = unsubscribe._b64(f"{workspace.id}.{cid + 1}.{mid}.{int(time.time())}".encode()) + "." + mac
    wrong_key = unsubscribe.unsubscribe_token("another-secret-" + "z" * 30, workspace.id, cid, mid, utcnow())
    flipped = head + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    expired = unsubscribe.unsubscribe_token(SECRET, workspace.id, cid, mid, utcnow() - timedelta(days=400))
    click = tracking.click_token(SECRET, workspace.id, mid, 0)  # a valid token of another purpose
    for bad in (altered_payload, wrong_key, flipped, expired, click, "garbage", head):
        assert client.post(f"/u/{bad}", data={"List-Unsubscribe": "One-Click"}).status_code == 404
        assert client.get(f"/u/{bad}").status_code == 404
    assert _suppressed(session_factory, workspace.id, "bob@example.com") is None
    assert _events(session_factory, workspace.id, cid, "email_unsubscribed") == []
    # Still valid after 60 days.
    old = unsubscribe.unsubscribe_token(SECRET, workspace.id, cid, mid, utcnow() - timedelta(days=61))
    assert client.post(f"/u/{old}").status_code == 200
    assert _suppressed(session_factory, workspace.id, "bob@example.com") == "unsubscribe"


def test_preference_centre_saves_topics(client, session_factory, workspace):
    cid, mid = _sent_message(session_factory, workspace.id, "pref@example.com")
    token = unsubscribe.unsubscribe_token(SECRET, workspace.id, cid, mid, utcnow())
    res = client.post(f"/u/{token}/preferences", data={"newsletter": "on", "_submitted": "1"})
    assert res.status_code == 200
    with session_factory() as s:
        assert consent_service.can_send_marketing(s, workspace.id, cid, "newsletter").allowed
        assert consent_service.can_send_marketing(s, workspace.id, cid, "offers").reason == "withdrawn"
    assert _suppressed(session_factory, workspace.id, "pref@example.com") is None


def test_click_redirects_only_to_the_stored_url(client, session_factory, workspace):
    cid, mid = _sent_message(session_factory, workspace.id, "carol@example.com")
    token = tracking.click_token(SECRET, workspace.id, mid, 0)
    res = client.get(
        f"/c/{token}", follow_redirects=False, headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/126"}
    )
    assert res.status_code == 302 and res.headers["location"] == "https://shop.example.fi/sale?a=1&b=2"
    # Other link indexes, other messages, other purposes and forgeries go nowhere.
    for bad in (
        tracking.click_token(SECRET, workspace.id, mid, 1),
        tracking.click_token(SECRET, workspace.id + 1000, mid, 0),
        tracking.click_token("wrong-" + "k" * 40, workspace.id, mid, 0),
        tracking.open_token(SECRET, workspace.id, mid),
        # altered signature (a token already ending in "AA" happens 1 time in 256; then alter it otherwise)
        token[:-2] + ("AA" if not token.endswith("AA") else "BA"),
    ):
        r = client.get(f"/c/{bad}?url=https://evil.example", follow_redirects=False)
        assert r.status_code == 404 and "location" not in r.headers
    with session_factory() as s:
        row = s.get(OutboxMessage, mid)
        assert (row.human_clicks, row.machine_clicks) == (1, 0) and row.clicked_at is not None
    # A HEAD request (link scanner) is flagged, not counted as a person.
    assert client.head(f"/c/{token}", follow_redirects=False).status_code == 302
    with session_factory() as s:
        assert s.get(OutboxMessage, mid).machine_clicks == 1
    clicks = _events(session_factory, workspace.id, cid, "email_clicked")
    assert sorted(e.properties["machine"] for e in clicks) == [False, True]


def test_click_seconds_after_sending_is_a_scanner(client, session_factory, workspace):
    cid, mid = _sent_message(session_factory, workspace.id, "fast@example.com", sent_ago=1)
    token = tracking.click_token(SECRET, workspace.id, mid, 0)
    client.get(
        f"/c/{token}", follow_redirects=False, headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Chrome/125"}
    )
    (event,) = _events(session_factory, workspace.id, cid, "email_clicked")
    assert event.properties["machine_reason"] == "too_fast"


def test_open_pixel_counts_people_and_flags_apple_proxy(client, session_factory, workspace):
    cid, mid = _sent_message(session_factory, workspace.id, "dave@example.com")
    token = tracking.open_token(SECRET, workspace.id, mid)
    human = client.get(f"/o/{token}.gif", headers={"User-Agent": "Mozilla/5.0 (Macintosh) AppleWebKit Thunderbird/115"})
    assert human.status_code == 200 and human.headers["content-type"] == "image/gif"
    client.get(f"/o/{token}.gif", headers={"User-Agent": "Mozilla/5.0"})  # Apple Mail Privacy Protection
    forged = client.get(f"/o/{token[:-3]}{'abc' if not token.endswith('abc') else 'xyz'}.gif")
    assert forged.status_code == 200  # always a pixel, but nothing is written
    with session_factory() as s:
        row = s.get(OutboxMessage, mid)
        assert (row.human_opens, row.machine_opens) == (1, 1)
    opens = _events(session_factory, workspace.id, cid, "email_opened")
    assert sorted((e.properties["machine"], e.properties["machine_reason"]) for e in opens) == [
        (False, None),
        (True, "apple_mpp"),
    ]


def _signed(secret: str, body: bytes, ts: int | None = None) -> dict[str, str]:
    stamp = str(ts if ts is not None else int(time.time()))
    return {
        "X-Suppilo-Timestamp": stamp,
        "X-Suppilo-Signature": dsn.webhook_signature(secret, stamp, body),
        "Content-Type": "application/json",
    }


def test_webhook_rejects_bad_signatures_and_old_timestamps(client, session_factory, workspace):
    _, mid = _sent_message(session_factory, workspace.id, "erin@example.com")
    secret = client.get("/api/v1/mail/webhook-secret", headers=workspace.auth("admin")).json()["secret"]
    body = json.dumps({"events": [{"id": "e1", "type": "bounce", "outbox_id": mid}]}).encode()
    base = {"X-Suppilo-Workspace": workspace.slug}
    bad = client.post("/v1/mail/events", content=body, headers={**base, **_signed("wrong", body)})
    old = client.post(
        "/v1/mail/events", content=body, headers={**base, **_signed(secret, body, int(time.time()) - 301)}
    )
    tampered = client.post(
        "/v1/mail/events", content=body.replace(b"bounce", b"complaint"), headers={**base, **_signed(secret, body)}
    )
    unknown_ws = client.post(
        "/v1/mail/events", content=body, headers={"X-Suppilo-Workspace": "nope", **_signed(secret, body)}
    )
    for res in (bad, old, tampered, unknown_ws):
        assert res.status_code == 401 and res.json()["error"]["code"] == "unauthorized"
    assert _suppressed(session_factory, workspace.id, "erin@example.com") is None
    with session_factory() as s:
        assert s.get(OutboxMessage, mid).delivery_status is None


def test_webhook_events_apply_once_and_bounce_beats_a_later_delivered(client, session_factory, workspace):
    cid, mid = _sent_message(session_factory, workspace.id, "fay@example.com")
    secret = client.get("/api/v1/mail/webhook-secret", headers=workspace.auth("admin")).json()["secret"]
    with session_factory() as s:
        message_id = s.get(OutboxMessage, mid).message_id
    base = {"X-Suppilo-Workspace": workspace.slug}
    bounce = json.dumps(
        {"events": [{"id": "b-1", "type": "bounce", "message_id": message_id, "status": "5.1.1"}]}
    ).encode()
    results = [
        client.post("/v1/mail/events", content=bounce, headers={**base, **_signed(secret, bounce)}).json()
        for _ in range(50)
    ]
    assert results[0] == {"applied": 1, "duplicates": 0, "unknown": 0}
    assert results[1:] == [{"applied": 0, "duplicates": 1, "unknown": 0}] * 49, results[:5]
    delivered = json.dumps({"id": "d-1", "type": "delivered", "outbox_id": mid}).encode()
    assert (
        client.post("/v1/mail/events", content=delivered, headers={**base, **_signed(secret, delivered)}).json()[
            "applied"
        ]
        == 1
    )
    with session_factory() as s:
        assert s.get(OutboxMessage, mid).delivery_status == "bounced"
        assert suppression.check(s, workspace.id, "fay@example.com", "transactional") == "hard_bounce"
    assert len(_events(session_factory, workspace.id, cid, "email_bounced")) == 1
    assert _events(session_factory, workspace.id, cid, "email_delivered") == []


def test_double_opt_in_confirms_on_post_only(client, session_factory, workspace):
    cid = add_contact(session_factory, workspace.id, "gus@example.de", country="DE")
    with session_factory() as s:
        record = consent_service.record_consent(s, workspace.id, cid, source="test")
        s.commit()
        record_id = record.id
    token = unsubscribe.confirm_token(SECRET, workspace.id, record_id)
    assert client.get(f"/consent/confirm/{token}").status_code == 200
    with session_factory() as s:
        assert consent_service.can_send_marketing(s, workspace.id, cid).reason == "unconfirmed"
    altered = token[:-1] + ("y" if token[-1] != "y" else "z")  # always a different token
    assert client.post(f"/consent/confirm/{altered}").status_code == 404
    assert client.post(f"/consent/confirm/{token}").status_code == 200
    with session_factory() as s:
        assert consent_service.can_send_marketing(s, workspace.id, cid).allowed


def test_messages_api_lists_uncertain_and_resends(client, session_factory, workspace, other_workspace):
    _, mid = _sent_message(session_factory, workspace.id, "hal@example.com")
    with session_factory() as s:
        s.get(OutboxMessage, mid).status = "uncertain"
        s.commit()
    listed = client.get("/api/v1/messages/uncertain", headers=workspace.auth("read")).json()
    assert [m["id"] for m in listed] == [mid]
    assert client.get("/api/v1/messages/uncertain", headers=other_workspace.auth("read")).json() == []
    assert client.post(f"/api/v1/messages/{mid}/resend", headers=other_workspace.auth("admin")).status_code == 404
    assert client.post(f"/api/v1/messages/{mid}/resend", headers=workspace.auth("write")).status_code == 403
    res = client.post(f"/api/v1/messages/{mid}/resend", headers=workspace.auth("admin"))
    assert res.status_code == 200 and res.json()["status"] == "queued"
    again = client.post(f"/api/v1/messages/{mid}/resend", headers=workspace.auth("admin"))
    assert again.status_code == 409


def test_a_token_differing_only_in_base64_spare_bits_is_refused():
    token = unsubscribe.confirm_token(SECRET, 50, 8)
    head, tail = token.split(".")
    # 16 MAC bytes end in a character whose low 4 bits base64 ignores; every other spelling must be refused.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    variants = [f"{head}.{tail[:-1]}{c}" for c in alphabet if c != tail[-1]]
    assert unsubscribe.parse_confirm_token(SECRET, token) == (50, 8)
    assert all(unsubscribe.parse_confirm_token(SECRET, v) is None for v in variants)
