"""Segment tracking API: real Segment-shaped payloads through /v1/*, on the test database."""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suppilo.contacts.models import Contact, ContactIdentity, StageChange
from suppilo.db.session import make_session_factory
from suppilo.events.models import Event, Touch


@pytest.fixture
def db(db_engine) -> Iterator[Session]:
    """A read-only session (never blocks the app's writers); ``send`` ends its snapshot around every request."""
    with make_session_factory(db_engine, read_only=True)() as s:
        yield s
        s.rollback()


@pytest.fixture
def send(client, db):
    def _send(method: str, path: str, **kwargs):
        db.rollback()
        res = client.request(method, path, **kwargs)
        db.rollback()
        return res

    return _send


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def mid() -> str:
    return str(uuid.uuid4())


def context(url: str = "https://shop.example.fi/", referrer: str = "", **extra) -> dict:
    return {
        "page": {"url": url, "referrer": referrer, "path": "/", "title": "Shop"},
        "ip": "203.0.113.7",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        "locale": "fi-FI",
        "library": {"name": "analytics.js", "version": "2.11.1"},
        **extra,
    }


def page(anon: str, url: str = "https://shop.example.fi/", referrer: str = "", **extra) -> dict:
    return {
        "type": "page",
        "messageId": mid(),
        "anonymousId": anon,
        "name": "Home",
        "properties": {"url": url, "referrer": referrer, "path": "/", "title": "Shop"},
        "context": context(url, referrer),
        "timestamp": "2024-05-01T10:00:00.000Z",
        "sentAt": "2024-05-01T10:00:00.000Z",
        **extra,
    }


def contact_of(db, workspace_id: int, anon: str) -> Contact:
    cid = db.scalar(
        select(ContactIdentity.contact_id).where(
            ContactIdentity.workspace_id == workspace_id,
            ContactIdentity.kind == "anonymous_id",
            ContactIdentity.value == anon,
        )
    )
    assert cid is not None
    return db.get(Contact, cid)


def test_track_with_basic_auth_creates_anonymous_contact(send, workspace, db) -> None:
    anon = mid()
    body = {
        "messageId": mid(),
        "anonymousId": anon,
        "event": "Product Viewed",
        "properties": {"product_id": "SKU-1", "price": 19.9},
        "context": context(),
        "timestamp": "2024-05-01T10:00:00.000Z",
    }
    res = send("POST", "/v1/track", json=body, headers=basic(workspace.track_key))
    assert res.status_code == 200 and res.json() == {"success": True}
    assert res.headers["access-control-allow-origin"] == "*"
    contact = contact_of(db, workspace.id, anon)
    assert contact.is_anonymous and contact.lifecycle_stage == "awareness"
    assert contact.first_seen_at is not None and contact.last_seen_at is not None
    ev = db.scalar(select(Event).where(Event.workspace_id == workspace.id, Event.contact_id == contact.id))
    assert ev.kind == "track" and ev.name == "Product Viewed" and ev.properties["product_id"] == "SKU-1"
    assert ev.context["locale"] == "fi-FI"


def test_auth_variants_and_refusals(send, workspace) -> None:
    body = {"anonymousId": mid(), "event": "Clicked"}
    assert send("POST", "/v1/track", json=body, headers=workspace.auth("track")).status_code == 200
    assert send("POST", "/v1/track", json={**body, "writeKey": workspace.track_key}).status_code == 200
    assert send("POST", "/v1/track", json=body, headers=basic(workspace.write_key)).status_code == 200
    res = send("POST", "/v1/track", json=body)
    assert res.status_code == 401 and res.json()["error"]["code"] == "unauthorized"
    assert send("POST", "/v1/track", json=body, headers=basic("wk_nope")).status_code == 401
    res = send("POST", "/v1/track", json=body, headers=basic(workspace.read_key))
    assert res.status_code == 403 and res.json()["error"]["code"] == "forbidden"


def test_same_message_id_five_times_is_stored_once(send, workspace, db) -> None:
    body = {"messageId": mid(), "anonymousId": mid(), "event": "Signed Up", "context": context()}
    for _ in range(5):
        assert send("POST", "/v1/track", json=body, headers=basic(workspace.track_key)).status_code == 200
    n = db.scalar(select(func.count()).select_from(Event).where(Event.workspace_id == workspace.id))
    assert n == 1
    touches = db.scalar(select(func.count()).select_from(Touch).where(Touch.workspace_id == workspace.id))
    assert touches == 1


def test_missing_message_id_gets_deterministic_one(send, workspace, db) -> None:
    body = {"anonymousId": mid(), "event": "Clicked", "timestamp": "2024-05-01T10:00:00Z"}
    for _ in range(3):
        send("POST", "/v1/track", json=body, headers=basic(workspace.track_key))
    ids = db.scalars(select(Event.message_id).where(Event.workspace_id == workspace.id)).all()
    assert len(ids) == 1 and ids[0].startswith("sha256-")


def test_clock_skew_is_corrected_with_sent_at(send, workspace, db) -> None:
    # The device clock is a year behind: the call happened 5 s before it was sent.
    body = {
        "messageId": mid(),
        "anonymousId": mid(),
        "event": "Skewed",
        "timestamp": "2023-01-01T00:00:00Z",
        "sentAt": "2023-01-01T00:00:05Z",
    }
    send("POST", "/v1/track", json=body, headers=basic(workspace.track_key))
    ev = db.scalar(select(Event).where(Event.workspace_id == workspace.id))
    assert abs((ev.received_at - ev.occurred_at).total_seconds() - 5) < 0.001
    body2 = {"messageId": mid(), "anonymousId": mid(), "event": "NoSent", "timestamp": "2023-01-01T00:00:00Z"}
    send("POST", "/v1/track", json=body2, headers=basic(workspace.track_key))
    ev2 = db.scalar(select(Event).where(Event.workspace_id == workspace.id, Event.name == "NoSent"))
    assert ev2.occurred_at.isoformat() == "2023-01-01T00:00:00+00:00"


def test_single_invalid_call_is_422_with_path(send, workspace) -> None:
    res = send("POST", "/v1/track", json={"anonymousId": mid()}, headers=basic(workspace.track_key))
    assert res.status_code == 422 and res.json()["error"]["path"] == "event"
    res = send("POST", "/v1/track", json={"event": "X"}, headers=basic(workspace.track_key))
    assert res.status_code == 422 and res.json()["error"]["path"] == "userId"
    res = send(
        "POST",
        "/v1/identify",
        json={"userId": "u1", "traits": {"email": "not an email"}},
        headers=basic(workspace.track_key),
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "traits.email"
    res = send(
        "POST",
        "/v1/track",
        json={"anonymousId": "a", "event": "X", "timestamp": "yesterday"},
        headers=basic(workspace.track_key),
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "timestamp"


def test_batch_reports_bad_items_and_stores_good_ones(send, workspace, db) -> None:
    anon = mid()
    batch = [
        page(anon),
        {"type": "track", "messageId": mid(), "anonymousId": anon, "event": "Added"},
        {"type": "track", "messageId": mid(), "anonymousId": anon},
        {"type": "bogus", "messageId": mid(), "anonymousId": anon},
        {"type": "identify", "messageId": mid(), "anonymousId": anon, "traits": {"email": "nope@"}},
        {"messageId": mid(), "anonymousId": anon, "event": "typeless"},
    ]
    res = send(
        "POST", "/v1/batch", json={"batch": batch, "sentAt": "2024-05-01T10:00:00Z"}, headers=basic(workspace.track_key)
    )
    assert res.status_code == 200
    body = res.json()
    assert body["success"] is True and body["accepted"] == 2
    assert [(e["index"], e["path"]) for e in body["errors"]] == [
        (2, "batch[2].event"),
        (3, "batch[3].type"),
        (4, "batch[4].traits.email"),
        (5, "batch[5].type"),
    ]
    names = db.scalars(select(Event.name).where(Event.workspace_id == workspace.id).order_by(Event.id)).all()
    assert sorted(names) == ["Added", "Home"]


def test_import_is_an_alias_of_batch(send, workspace, db) -> None:
    res = send("POST", "/v1/import", json={"batch": [page(mid())]}, headers=basic(workspace.track_key))
    assert res.status_code == 200 and res.json()["accepted"] == 1


def test_too_large_is_413(send, workspace, test_settings) -> None:
    items = [page(mid()) for _ in range(test_settings.max_batch_items + 1)]
    res = send(
        "POST",
        "/v1/batch",
        content=orjson.dumps({"batch": items[:3]}) + b" " * test_settings.max_batch_bytes,
        headers={**basic(workspace.track_key), "Content-Type": "application/json"},
    )
    assert res.status_code == 413 and res.json()["error"]["code"] == "too_large"
    small = [{"type": "track", "anonymousId": "a", "event": "e"}] * (test_settings.max_batch_items + 1)
    res = send("POST", "/v1/batch", json={"batch": small}, headers=basic(workspace.track_key))
    assert res.status_code == 413 and res.json()["error"]["path"] == "batch"


def test_gzip_body_is_accepted(send, workspace, db) -> None:
    raw = orjson.dumps({"batch": [page(mid())]})
    res = send(
        "POST",
        "/v1/batch",
        content=gzip.compress(raw),
        headers={**basic(workspace.track_key), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert res.status_code == 200 and res.json()["accepted"] == 1


def test_cors_preflight(send) -> None:
    res = send(
        "OPTIONS",
        "/v1/batch",
        headers={
            "Origin": "https://customer.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert res.status_code == 204
    assert res.headers["access-control-allow-origin"] == "*"
    assert "POST" in res.headers["access-control-allow-methods"]
    assert "authorization" in res.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in res.headers


def test_anonymous_history_moves_to_known_contact_on_identify(send, workspace, db) -> None:
    # The person bought before as a known customer (user id), then browses anonymously on a new device.
    send(
        "POST",
        "/v1/identify",
        json={"messageId": mid(), "userId": "cust-42", "traits": {"email": "Ada@Example.com", "name": "Ada Lovelace"}},
        headers=basic(workspace.track_key),
    )
    anon = mid()
    for path in ("/", "/pricing", "/features"):
        send(
            "POST",
            "/v1/batch",
            json={"batch": [page(anon, f"https://shop.example.fi{path}")]},
            headers=basic(workspace.track_key),
        )
        anonymous = contact_of(db, workspace.id, anon)
    assert anonymous.is_anonymous
    anonymous_id = anonymous.id
    res = send(
        "POST",
        "/v1/identify",
        json={
            "messageId": mid(),
            "anonymousId": anon,
            "userId": "cust-42",
            "traits": {"email": "ada@example.com", "phone": "040 1234567", "title": "CTO"},
            "context": {"ip": "203.0.113.7", "locale": "fi-FI"},
            "timestamp": "2024-05-02T10:00:00Z",
        },
        headers=basic(workspace.track_key),
    )
    assert res.status_code == 200
    known = contact_of(db, workspace.id, anon)
    assert known.id != anonymous_id and known.email == "ada@example.com" and known.external_id == "cust-42"
    assert db.get(Contact, anonymous_id) is None
    pages = db.scalars(
        select(Event.name).where(Event.workspace_id == workspace.id, Event.contact_id == known.id, Event.kind == "page")
    ).all()
    assert len(pages) == 3
    assert known.first_name == "Ada" and known.last_name == "Lovelace"
    assert known.phone == "+358401234567" and known.job_title == "CTO"


def test_identify_upgrades_anonymous_contact_and_moves_stage(send, workspace, db) -> None:
    anon = mid()
    send(
        "POST",
        "/v1/page",
        json={k: v for k, v in page(anon).items() if k != "type"},
        headers=basic(workspace.track_key),
    )
    before = contact_of(db, workspace.id, anon)
    send(
        "POST",
        "/v1/identify",
        json={"messageId": mid(), "anonymousId": anon, "traits": {"email": "bo@example.org", "firstName": "Bo"}},
        headers=basic(workspace.track_key),
    )
    after = contact_of(db, workspace.id, anon)
    assert after.id == before.id and not after.is_anonymous and after.email == "bo@example.org"
    assert after.lifecycle_stage == "interest"
    reasons = db.scalars(
        select(StageChange.reason).where(StageChange.workspace_id == workspace.id, StageChange.contact_id == after.id)
    ).all()
    assert any("contact_identified" in r for r in reasons)


def test_alias_merges_previous_id_into_user(send, workspace, db) -> None:
    anon = mid()
    send("POST", "/v1/batch", json={"batch": [page(anon), page(anon)]}, headers=basic(workspace.track_key))
    send(
        "POST",
        "/v1/identify",
        json={"userId": "u-77", "traits": {"email": "u77@example.com"}},
        headers=basic(workspace.track_key),
    )
    res = send(
        "POST",
        "/v1/alias",
        json={"messageId": mid(), "previousId": anon, "userId": "u-77"},
        headers=basic(workspace.track_key),
    )
    assert res.status_code == 200
    contact = contact_of(db, workspace.id, anon)
    assert contact.external_id == "u-77" and contact.email == "u77@example.com"
    n = db.scalar(select(func.count()).select_from(Event).where(Event.contact_id == contact.id, Event.kind == "page"))
    assert n == 2


def test_group_creates_and_links_company(send, workspace, db) -> None:
    from suppilo.companies.models import Company

    body = {
        "messageId": mid(),
        "userId": "u-grp",
        "groupId": "acme-1",
        "traits": {"name": "Acme Oy", "website": "https://www.acme.fi/about", "industry": "Retail", "employees": 120},
    }
    assert send("POST", "/v1/group", json=body, headers=basic(workspace.track_key)).status_code == 200
    company = db.scalar(select(Company).where(Company.workspace_id == workspace.id))
    assert company.name == "Acme Oy" and company.domain == "acme.fi" and company.employees == 120
    contact = db.scalar(select(Contact).where(Contact.workspace_id == workspace.id, Contact.external_id == "u-grp"))
    assert contact.company_id == company.id
    # A second user of the same company by domain finds it.
    body2 = {"userId": "u-grp2", "groupId": "other-id", "traits": {"domain": "acme.fi"}}
    send("POST", "/v1/group", json=body2, headers=basic(workspace.track_key))
    assert db.scalar(select(func.count()).select_from(Company).where(Company.workspace_id == workspace.id)) == 1


def test_utm_and_referrer_give_channels_and_touches(send, workspace, db) -> None:
    anon = mid()
    batch = [
        page(
            anon,
            "https://shop.example.fi/?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
            timestamp="2024-05-01T10:00:00Z",
        ),
        page(anon, "https://shop.example.fi/products", "https://shop.example.fi/", timestamp="2024-05-01T10:01:00Z"),
        page(anon, "https://shop.example.fi/", "https://www.google.com/search?q=x", timestamp="2024-05-03T09:00:00Z"),
    ]
    for item in batch:
        item.pop("sentAt")
    send("POST", "/v1/batch", json={"batch": batch}, headers=basic(workspace.track_key))
    contact = contact_of(db, workspace.id, anon)
    touches = db.scalars(
        select(Touch)
        .where(Touch.workspace_id == workspace.id, Touch.contact_id == contact.id)
        .order_by(Touch.occurred_at)
    ).all()
    assert [t.channel for t in touches] == ["email", "organic_search"]
    assert touches[0].campaign == "spring" and touches[1].source == "google.com"
    assert contact.first_touch_channel == "email" and contact.first_touch_campaign == "spring"
    assert contact.latest_touch_channel == "organic_search"
    # A later direct visit does not add a touch; a first direct visit does.
    other = mid()
    send("POST", "/v1/batch", json={"batch": [page(other)]}, headers=basic(workspace.track_key))
    assert contact_of(db, workspace.id, other).first_touch_channel == "direct"


def test_channel_rule_edits_change_classification(send, workspace, db) -> None:
    rules = send("GET", "/api/v1/channel-rules", headers=workspace.auth("read")).json()["rules"]
    url = "https://shop.example.fi/?utm_source=partnerblog&utm_medium=collab"
    res = send("POST", "/api/v1/channel-rules/test", json={"url": url}, headers=workspace.auth("read"))
    assert res.json()["channel"] == "direct" or res.json()["rule"] is None
    new = [{"channel": "affiliate", "conditions": {"medium": ["collab"]}, "description": "Collabs"}] + [
        {k: r[k] for k in ("channel", "conditions", "description")} for r in rules
    ]
    assert send("PUT", "/api/v1/channel-rules", json={"rules": new}, headers=workspace.auth("read")).status_code == 403
    res = send("PUT", "/api/v1/channel-rules", json={"rules": new}, headers=workspace.auth("admin"))
    assert res.status_code == 200 and res.json()["rules"][0]["channel"] == "affiliate"
    res = send("POST", "/api/v1/channel-rules/test", json={"url": url}, headers=workspace.auth("read"))
    assert res.json()["channel"] == "affiliate" and res.json()["rule"]["description"] == "Collabs"
    anon = mid()
    send("POST", "/v1/batch", json={"batch": [page(anon, url)]}, headers=basic(workspace.track_key))
    assert contact_of(db, workspace.id, anon).first_touch_channel == "affiliate"


def test_invalid_channel_rules_name_the_path(send, workspace) -> None:
    rules = [
        {"channel": "email", "conditions": {"medium": ["email"]}},
        {"channel": "email", "conditions": {"source": ["x"]}},
        {"channel": "email", "conditions": {"medium": "email"}},
    ]
    res = send("PUT", "/api/v1/channel-rules", json={"rules": rules}, headers=workspace.auth("admin"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "rules[2].conditions.medium"
    res = send(
        "PUT",
        "/api/v1/channel-rules",
        json={"rules": [{"channel": "tv", "conditions": {"medium": ["tv"]}}]},
        headers=workspace.auth("admin"),
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "rules[0].channel"
    assert len(send("GET", "/api/v1/channel-rules", headers=workspace.auth("read")).json()["rules"]) > 3


def test_write_key_of_a_never_writes_into_b(send, workspace, other_workspace, db) -> None:
    anon = mid()
    send("POST", "/v1/batch", json={"batch": [page(anon)]}, headers=basic(workspace.track_key))
    # B's key with the same anonymous id gets its own contact in B.
    send("POST", "/v1/batch", json={"batch": [page(anon)], "writeKey": other_workspace.track_key})
    a = db.scalar(select(func.count()).select_from(Event).where(Event.workspace_id == workspace.id))
    b = db.scalar(select(func.count()).select_from(Event).where(Event.workspace_id == other_workspace.id))
    assert (a, b) == (1, 1)
    ca = contact_of(db, workspace.id, anon)
    cb = contact_of(db, other_workspace.id, anon)
    assert ca.id != cb.id and ca.workspace_id == workspace.id and cb.workspace_id == other_workspace.id
    # B cannot read A's rules either.
    assert send("GET", "/api/v1/channel-rules", headers=other_workspace.auth("read")).json()["rules"][0]["id"] not in {
        r["id"] for r in send("GET", "/api/v1/channel-rules", headers=workspace.auth("read")).json()["rules"]
    }


def test_identify_custom_property_and_screen(send, workspace, session, db) -> None:
    from suppilo.contacts.models import PropertyDefinition

    session.add(
        PropertyDefinition(
            workspace_id=workspace.id,
            object_type="contact",
            name="plan",
            label="Plan",
            type="enum",
            options=["free", "pro"],
        )
    )
    session.add(
        PropertyDefinition(
            workspace_id=workspace.id, object_type="contact", name="seats", label="Seats", type="number", options=[]
        )
    )
    session.commit()
    send(
        "POST",
        "/v1/identify",
        json={"userId": "p1", "traits": {"plan": "pro", "seats": "5", "other": 1}},
        headers=basic(workspace.track_key),
    )
    send("POST", "/v1/identify", json={"userId": "p2", "traits": {"plan": "gold"}}, headers=basic(workspace.track_key))
    c1 = db.scalar(select(Contact).where(Contact.workspace_id == workspace.id, Contact.external_id == "p1"))
    c2 = db.scalar(select(Contact).where(Contact.workspace_id == workspace.id, Contact.external_id == "p2"))
    assert c1.properties == {"plan": "pro", "seats": 5} and c2.properties == {}
    res = send("POST", "/v1/screen", json={"userId": "p1", "name": "Settings"}, headers=basic(workspace.track_key))
    assert res.status_code == 200
    assert db.scalar(select(Event.kind).where(Event.workspace_id == workspace.id, Event.name == "Settings")) == "screen"


def test_order_completed_through_track_records_the_order(send, workspace, db) -> None:
    from suppilo.commerce.models import Order

    anon = mid()
    body = {
        "messageId": mid(),
        "anonymousId": anon,
        "event": "Order Completed",
        "properties": {
            "order_id": "ORD-1001",
            "total": 59.8,
            "revenue": 49.8,
            "shipping": 10,
            "currency": "EUR",
            "products": [{"product_id": "P1", "sku": "SKU-1", "name": "Kettle", "price": 24.9, "quantity": 2}],
        },
        "context": context(),
        "timestamp": "2024-05-01T10:00:00Z",
    }
    for _ in range(2):
        res = send("POST", "/v1/track", json=body, headers=basic(workspace.track_key))
        assert res.status_code == 200 and res.json() == {"success": True}
    contact = contact_of(db, workspace.id, anon)
    orders = db.scalars(select(Order).where(Order.workspace_id == workspace.id)).all()
    assert len(orders) == 1
    assert orders[0].external_id == "ORD-1001" and orders[0].contact_id == contact.id
    assert orders[0].total_minor == 5980 and orders[0].currency == "EUR"
    # An order without an id is stored as an event and reported on its call.
    bad = {"type": "track", "messageId": mid(), "anonymousId": anon, "event": "Order Completed", "properties": {}}
    res = send("POST", "/v1/batch", json={"batch": [page(anon), bad]}, headers=basic(workspace.track_key))
    assert res.json()["accepted"] == 2 and res.json()["errors"][0]["path"] == "batch[1].properties.order_id"


def test_single_calls_arriving_together_share_a_transaction() -> None:
    import threading

    from suppilo.adapters.http.routers.tracking import GroupCommit, _Call

    gc = GroupCommit()
    groups: list[list[str]] = []
    first_running = threading.Event()
    release = threading.Event()

    def run(workspace_id: int, calls: list) -> None:
        groups.append([c.message for c in calls])
        if len(groups) == 1:
            first_running.set()
            release.wait(5)
        for c in calls:
            if c.message == "bad":
                raise RuntimeError("refused")

    finished: dict[str, threading.Event] = {}
    calls: dict[str, _Call] = {}

    def submit(name: str) -> None:
        finished[name] = threading.Event()
        calls[name] = _Call(1, name, run, finished[name].set)  # type: ignore[arg-type]
        gc.submit(calls[name])

    submit("a")
    assert first_running.wait(5)
    for name in ("b", "bad", "c"):
        submit(name)
    while len(gc._pending) < 3:
        threading.Event().wait(0.001)
    release.set()
    for event in finished.values():
        assert event.wait(5)
    # The three calls that waited went in one transaction; it failed, so each was retried alone.
    assert groups[0] == ["a"] and sorted(groups[1]) == ["b", "bad", "c"]
    assert sorted(map(tuple, groups[2:])) == [("b",), ("bad",), ("c",)]
    results = {name: "failed" if call.failure else "ok" for name, call in calls.items()}
    assert results == {"a": "ok", "b": "ok", "bad": "failed", "c": "ok"}


def test_workspaces_of_one_round_are_stored_side_by_side() -> None:
    import threading

    from suppilo.adapters.http.routers.tracking import GroupCommit, _Call

    gc = GroupCommit()
    first_running = threading.Event()
    release = threading.Event()
    both = threading.Barrier(2, timeout=5)
    rounds: list[tuple[int, list[str]]] = []

    def run(workspace_id: int, calls: list) -> None:
        rounds.append((workspace_id, [c.message for c in calls]))
        if calls[0].message == "first":
            first_running.set()
            release.wait(5)
            return
        both.wait()  # raises BrokenBarrierError unless the other workspace's store runs at the same time

    finished: list[threading.Event] = []
    calls: list[_Call] = []

    def submit(workspace_id: int, name: str) -> None:
        finished.append(threading.Event())
        calls.append(_Call(workspace_id, name, run, finished[-1].set))  # type: ignore[arg-type]
        gc.submit(calls[-1])

    submit(1, "first")
    assert first_running.wait(5)
    submit(1, "a")
    submit(2, "b")
    while len(gc._pending) < 2:
        threading.Event().wait(0.001)
    release.set()
    for event in finished:
        assert event.wait(10)
    assert [c.failure for c in calls] == [None, None, None]
    assert sorted(rounds[1:]) == [(1, ["a"]), (2, ["b"])]


def test_concurrent_single_calls_are_all_stored_with_their_own_errors(send, workspace, db) -> None:
    from concurrent.futures import ThreadPoolExecutor

    anon = mid()
    bodies = [
        {"messageId": mid(), "anonymousId": anon, "event": "Viewed", "properties": {"n": i}, "context": context()}
        for i in range(11)
    ]
    bodies.append({"messageId": mid(), "anonymousId": anon, "event": "Order Completed", "properties": {}})
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(lambda b: send("POST", "/v1/track", json=b, headers=basic(workspace.track_key)), bodies)
        )
    assert [a.status_code for a in answers] == [200] * 12
    assert all(a.json() == {"success": True} for a in answers[:11])
    errors = answers[11].json()["errors"]
    assert [(e["index"], e["path"]) for e in errors] == [(0, "properties.order_id")]
    contact = contact_of(db, workspace.id, anon)
    names = db.scalars(
        select(Event.name).where(Event.workspace_id == workspace.id, Event.contact_id == contact.id)
    ).all()
    assert sorted(names) == ["Order Completed"] + ["Viewed"] * 11
    n = db.scalar(select(func.count()).select_from(Contact).where(Contact.workspace_id == workspace.id))
    assert n == 1


def test_requests_sharing_a_transaction_get_only_their_own_errors(client, workspace, db) -> None:
    """Batches and single calls stored in one transaction (as the writer thread groups them) each get their own
    errors back, under their own paths and indexes, and every call is stored."""
    from datetime import UTC, datetime

    from suppilo.adapters.http.routers.tracking import _Call, _store_of
    from suppilo.events.ingest import parse_batch, parse_message

    anon = mid()
    now = datetime.now(UTC)
    order = {"type": "track", "anonymousId": anon, "event": "Order Completed", "properties": {}}
    first, first_errors = parse_batch(
        [page(anon), {**order, "messageId": mid()}], received_at=now, sent_at=None, ip=None
    )
    second, second_errors = parse_batch(
        [{"type": "track", "anonymousId": anon}, page(anon), page(anon), {**order, "messageId": mid()}],
        received_at=now,
        sent_at=None,
        ip=None,
    )
    single = parse_message({**order, "messageId": mid()}, 0, kind="track", received_at=now)
    fine = parse_message({**order, "event": "Viewed", "messageId": mid()}, 0, kind="track", received_at=now)
    assert first_errors == [] and [e["path"] for e in second_errors] == ["batch[0].event"]
    calls = [
        _Call(workspace.id, None, _store_of(client.app), lambda: None, batch=first),
        _Call(workspace.id, single, _store_of(client.app), lambda: None),
        _Call(workspace.id, None, _store_of(client.app), lambda: None, batch=second),
        _Call(workspace.id, fine, _store_of(client.app), lambda: None),
    ]
    _store_of(client.app)(workspace.id, calls)
    assert [(e["index"], e["path"]) for e in calls[0].errors] == [(1, "batch[1].properties.order_id")]
    assert [(e["index"], e["path"]) for e in calls[1].errors] == [(0, "properties.order_id")]
    assert [(e["index"], e["path"]) for e in calls[2].errors] == [(3, "batch[3].properties.order_id")]
    assert calls[3].errors == []
    db.rollback()
    contact = contact_of(db, workspace.id, anon)
    names = db.scalars(select(Event.name).where(Event.workspace_id == workspace.id, Event.contact_id == contact.id))
    assert sorted(names) == ["Home"] * 3 + ["Order Completed"] * 3 + ["Viewed"]


def test_concurrent_batches_are_all_stored_with_their_own_errors(send, workspace, db) -> None:
    from concurrent.futures import ThreadPoolExecutor

    anon = mid()
    batches = [[page(anon), page(anon)] for _ in range(8)]
    batches[5].append({"type": "track", "messageId": mid(), "anonymousId": anon, "event": "Order Completed"})
    batches[6].insert(0, {"type": "track", "messageId": mid(), "anonymousId": anon})
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda b: send("POST", "/v1/batch", json={"batch": b}, headers=basic(workspace.track_key)), batches
            )
        )
    assert [a.status_code for a in answers] == [200] * 8
    errors = [[(e["index"], e["path"]) for e in a.json()["errors"]] for a in answers]
    assert errors == [[]] * 5 + [[(2, "batch[2].properties.order_id")], [(0, "batch[0].event")], []]
    assert [a.json()["accepted"] for a in answers] == [2] * 5 + [3, 2, 2]
    contact = contact_of(db, workspace.id, anon)
    n = db.scalar(select(func.count()).select_from(Event).where(Event.contact_id == contact.id))
    assert n == 17


def test_analytics_js_one_letter_paths_are_served(send, workspace, db) -> None:
    anon = mid()
    body = {
        "messageId": mid(),
        "anonymousId": anon,
        "event": "Signed Up",
        "context": context(),
        "writeKey": workspace.track_key,
    }
    res = send("POST", "/v1/t", json=body, headers=basic(workspace.track_key))
    assert res.status_code == 200 and res.json() == {"success": True}
    res = send("POST", "/v1/p", json=page(anon), headers=basic(workspace.track_key))
    assert res.status_code == 200
    res = send(
        "POST",
        "/v1/i",
        json={"messageId": mid(), "anonymousId": anon, "userId": "u-77", "traits": {"email": "t77@example.fi"}},
        headers=basic(workspace.track_key),
    )
    assert res.status_code == 200
    contact = contact_of(db, workspace.id, anon)
    db.refresh(contact)
    names = set(
        db.scalars(select(Event.name).where(Event.workspace_id == workspace.id, Event.contact_id == contact.id))
    )
    assert {"Signed Up", "Home"} <= names and contact.email == "t77@example.fi"
    assert send("OPTIONS", "/v1/t", headers={"Origin": "https://shop.example.fi"}).status_code in (200, 204)


def test_identify_joins_the_contact_known_only_by_the_users_email(send, workspace, db, client) -> None:
    # A lead arrived through a form (email only); the same person signs in on the site later (user id, no email yet).
    r = client.post(
        "/api/v1/contacts", json={"email": "lead@example.fi", "first_name": "Lea"}, headers=workspace.auth("write")
    )
    lead_id = r.json()["id"]
    send(
        "POST",
        "/v1/track",
        json={"messageId": mid(), "userId": "u-500", "event": "Signed In"},
        headers=basic(workspace.track_key),
    )
    res = send(
        "POST",
        "/v1/identify",
        json={"messageId": mid(), "userId": "u-500", "traits": {"email": "Lead@Example.fi"}},
        headers=basic(workspace.track_key),
    )
    assert res.status_code == 200
    db.expire_all()
    user_contact = db.scalar(
        select(Contact).where(Contact.workspace_id == workspace.id, Contact.external_id == "u-500")
    )
    assert user_contact.email == "lead@example.fi" and user_contact.first_name == "Lea"
    assert db.get(Contact, lead_id) is None or lead_id == user_contact.id  # one person now
    names = set(db.scalars(select(Event.name).where(Event.contact_id == user_contact.id)))
    assert "Signed In" in names


def test_identify_never_takes_an_email_from_another_user(send, workspace, db) -> None:
    for uid, email in (("u-1", "one@example.fi"), ("u-2", None)):
        traits = {"email": email} if email else {}
        send(
            "POST",
            "/v1/identify",
            json={"messageId": mid(), "userId": uid, "traits": traits},
            headers=basic(workspace.track_key),
        )
    send(
        "POST", "/v1/identify", json={"messageId": mid(), "userId": "u-2", "traits": {"email": "one@example.fi"}},
        headers=basic(workspace.track_key),
    )  # fmt: skip
    db.expire_all()
    one = db.scalar(select(Contact).where(Contact.workspace_id == workspace.id, Contact.external_id == "u-1"))
    two = db.scalar(select(Contact).where(Contact.workspace_id == workspace.id, Contact.external_id == "u-2"))
    assert one.email == "one@example.fi" and two is not None and two.id != one.id and two.email is None


def _contact_by(db: Session, ws: int, **where) -> Contact | None:
    db.expire_all()
    return db.scalar(
        select(Contact).where(Contact.workspace_id == ws, *(getattr(Contact, k) == v for k, v in where.items()))
    )


def test_identify_with_another_contacts_email_merges_it_into_the_user(send, workspace, db, client) -> None:
    from suppilo.contacts.models import ContactMerge

    # A lead from a form (email only, a name and a page view of its own) ...
    r = client.post(
        "/api/v1/contacts", json={"email": "lead2@example.fi", "first_name": "Lea"}, headers=workspace.auth("write")
    )
    lead_id = r.json()["id"]
    anon = mid()
    send("POST", "/v1/page", json=page(anon), headers=basic(workspace.track_key))
    send(  # the lead's earlier visit, joined to the lead when it identified with its address
        "POST",
        "/v1/identify",
        json={"anonymousId": anon, "traits": {"email": "lead2@example.fi"}},
        headers=basic(workspace.track_key),
    )
    # ... is the person who signed up earlier with an older address.
    for body in (
        {"messageId": mid(), "userId": "u-600", "traits": {"email": "old600@example.fi", "lastName": "Lahti"}},
        {"messageId": mid(), "userId": "u-600", "event": "Signed In"},
    ):
        path = "/v1/identify" if "traits" in body else "/v1/track"
        assert send("POST", path, json=body, headers=basic(workspace.track_key)).status_code == 200
    user_id = _contact_by(db, workspace.id, external_id="u-600").id
    res = send(
        "POST",
        "/v1/identify",
        json={"messageId": mid(), "userId": "u-600", "traits": {"email": "Lead2@example.fi"}},
        headers=basic(workspace.track_key),
    )
    assert res.status_code == 200 and res.json() == {"success": True}
    user = _contact_by(db, workspace.id, external_id="u-600")
    assert user.id == user_id and user.email == "lead2@example.fi"
    assert user.first_name == "Lea" and user.last_name == "Lahti"  # both contacts' fields
    assert db.get(Contact, lead_id) is None
    assert _contact_by(db, workspace.id, email="old600@example.fi") is None
    names = set(db.scalars(select(Event.name).where(Event.workspace_id == workspace.id, Event.contact_id == user.id)))
    assert {"Signed In", "identify", "Home"} <= names  # the user's history and the lead's page view
    merge = db.scalar(
        select(ContactMerge).where(ContactMerge.workspace_id == workspace.id, ContactMerge.merged_id == lead_id)
    )
    assert (merge.contact_id, merge.reason) == (user.id, "identity resolution")
    assert contact_of(db, workspace.id, anon).id == user.id  # the lead's anonymous id names the user now


def test_a_new_user_identifying_with_a_leads_email_in_one_batch_becomes_that_contact(
    send, workspace, db, client
) -> None:
    r = client.post(
        "/api/v1/contacts", json={"email": "lead3@example.fi", "first_name": "Lotta"}, headers=workspace.auth("write")
    )
    lead_id = r.json()["id"]
    batch = [
        {"type": "track", "messageId": mid(), "userId": "u-700", "event": "Signed Up"},
        {"type": "identify", "messageId": mid(), "userId": "u-700", "traits": {"email": "lead3@example.fi"}},
    ]
    res = send("POST", "/v1/batch", json={"batch": batch}, headers=basic(workspace.track_key))
    assert res.status_code == 200 and res.json()["errors"] == [] and res.json()["accepted"] == 2
    contact = _contact_by(db, workspace.id, external_id="u-700")
    assert contact.id == lead_id and contact.email == "lead3@example.fi" and contact.first_name == "Lotta"
    names = set(db.scalars(select(Event.name).where(Event.workspace_id == workspace.id, Event.contact_id == lead_id)))
    assert names == {"Signed Up", "identify"}
    n = db.scalar(select(func.count()).select_from(Contact).where(Contact.workspace_id == workspace.id))
    assert n == 1


def test_analytics_js_group_alias_and_batch_one_letter_paths(send, workspace, db) -> None:
    from suppilo.companies.models import Company

    anon = mid()
    key = basic(workspace.track_key)
    res = send("POST", "/v1/b", json={"batch": [page(anon), page(anon)]}, headers=key)
    assert res.status_code == 200 and res.json()["accepted"] == 2
    res = send("POST", "/v1/a", json={"messageId": mid(), "previousId": anon, "userId": "u-88"}, headers=key)
    assert res.status_code == 200
    res = send(
        "POST",
        "/v1/g",
        json={"messageId": mid(), "userId": "u-88", "groupId": "acme-1", "traits": {"name": "Acme Oy"}},
        headers=key,
    )
    assert res.status_code == 200
    contact = contact_of(db, workspace.id, anon)
    db.refresh(contact)
    company = db.scalar(select(Company).where(Company.workspace_id == workspace.id, Company.external_id == "acme-1"))
    assert contact.external_id == "u-88" and company.name == "Acme Oy" and contact.company_id == company.id
    kinds = sorted(db.scalars(select(Event.kind).where(Event.workspace_id == workspace.id)))
    assert kinds == ["alias", "group", "page", "page"]
    res = send("POST", "/v1/g", json={"messageId": mid(), "userId": "u-88"}, headers=key)
    assert res.status_code == 422 and res.json()["error"]["path"] == "groupId"


def _hold_writer_lock(path: str, held, release, released_at) -> None:
    import time

    from suppilo.adapters.http.routers.tracking import _SqliteWriterLock

    with _SqliteWriterLock(path):
        held.set()
        release.wait(10)
        released_at.value = time.monotonic()


def test_ingest_writers_of_two_processes_queue_on_the_sqlite_lock_file(tmp_path) -> None:
    import multiprocessing
    import time

    from suppilo.adapters.http.routers.tracking import _SqliteWriterLock

    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    released_at = ctx.Value("d", 0.0)
    path = str(tmp_path / "db.sqlite3")
    other = ctx.Process(target=_hold_writer_lock, args=(path, held, release, released_at))
    other.start()
    try:
        assert held.wait(30)
        lock = _SqliteWriterLock(path)
        release.set()
        with lock:
            entered = time.monotonic()
        assert released_at.value > 0 and entered >= released_at.value  # it waited for the other process
        assert (tmp_path / "db.sqlite3-ingest.lock").exists()
    finally:
        other.join(30)
