"""The bulk ingest path on a real database: stored-contact updates, ids, JSON and time round trips, durability."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select, text

from suppilo.contacts.models import Contact, ContactIdentity, StageChange
from suppilo.events import repository as repo
from suppilo.events.ingest import ingest, parse_message, store
from suppilo.events.models import Event, Touch


def _page(anon: str, url: str, referrer: str, ts: str) -> dict:
    return {
        "type": "page",
        "messageId": uuid.uuid4().hex,
        "anonymousId": anon,
        "name": "Home",
        "properties": {"url": url, "referrer": referrer, "title": "Kauppa ä"},
        "context": {"page": {"url": url, "referrer": referrer}, "nested": {"n": [1, 2.5, None, True]}},
        "timestamp": ts,
    }


def _contact_of(session, ws: int, anon: str) -> Contact:
    cid = session.scalar(
        select(ContactIdentity.contact_id).where(
            ContactIdentity.workspace_id == ws, ContactIdentity.value == anon, ContactIdentity.kind == "anonymous_id"
        )
    )
    return session.get(Contact, cid)


def test_later_batches_update_stored_contact_keeping_first_touch(session_factory, workspace) -> None:
    anon = uuid.uuid4().hex
    received = datetime(2024, 5, 10, tzinfo=UTC)
    first = [
        _page(
            anon,
            "https://shop.example.fi/?utm_source=news&utm_medium=email&utm_campaign=may",
            "",
            "2024-05-02T10:00:00Z",
        )
    ]
    later = [
        _page(anon, "https://shop.example.fi/", "https://www.google.com/", "2024-05-03T10:00:00Z"),
        _page(anon, "https://shop.example.fi/", "", "2024-05-01T09:00:00Z"),  # older than anything stored
    ]
    with session_factory() as s:
        assert ingest(s, workspace.id, first, received_at=received).stored == 1
        s.commit()
    with session_factory() as s:
        assert ingest(s, workspace.id, later, received_at=received).stored == 2
        s.commit()
    with session_factory() as s:
        c = _contact_of(s, workspace.id, anon)
        assert (c.first_touch_channel, c.first_touch_campaign) == ("email", "may")
        assert c.first_touch_at == datetime(2024, 5, 2, 10, tzinfo=UTC)
        assert (c.latest_touch_channel, c.latest_touch_source) == ("organic_search", "google.com")
        assert c.latest_touch_at == datetime(2024, 5, 3, 10, tzinfo=UTC)
        assert c.first_seen_at == datetime(2024, 5, 1, 9, tzinfo=UTC)
        assert c.last_seen_at == datetime(2024, 5, 3, 10, tzinfo=UTC)
        events = s.scalars(select(Event).where(Event.workspace_id == workspace.id).order_by(Event.occurred_at)).all()
        assert [e.occurred_at.isoformat() for e in events] == [
            "2024-05-01T09:00:00+00:00",
            "2024-05-02T10:00:00+00:00",
            "2024-05-03T10:00:00+00:00",
        ]
        assert events[0].properties["title"] == "Kauppa ä"
        assert events[0].context["nested"] == {"n": [1, 2.5, None, True]}
        touches = s.scalars(select(Touch).where(Touch.workspace_id == workspace.id).order_by(Touch.occurred_at)).all()
        # Each touch points at the event it came from.
        assert [(t.channel, s.get(Event, t.event_id).occurred_at) for t in touches] == [
            ("email", datetime(2024, 5, 2, 10, tzinfo=UTC)),
            ("organic_search", datetime(2024, 5, 3, 10, tzinfo=UTC)),
        ]


def test_many_new_contacts_get_their_own_rows(session_factory, workspace) -> None:
    received = datetime(2024, 5, 10, tzinfo=UTC)
    calls = []
    for i in range(300):
        call = _page(f"v-{i}-{uuid.uuid4().hex[:6]}", "https://shop.example.fi/", "", "2024-05-02T10:00:00Z")
        if i % 3 == 0:
            call = {**call, "type": "identify", "userId": f"u-{i}", "traits": {"email": f"p{i}@example.com"}}
        calls.append(call)
    with session_factory() as s:
        assert ingest(s, workspace.id, calls, received_at=received).stored == 300
        s.commit()
    with session_factory() as s:
        for i in (0, 1, 150, 299):
            anon = calls[i]["anonymousId"]
            c = _contact_of(s, workspace.id, anon)
            event = s.scalar(select(Event).where(Event.workspace_id == workspace.id, Event.anonymous_id == anon))
            assert event.contact_id == c.id
            assert c.external_id == (f"u-{i}" if i % 3 == 0 else None)
            assert c.email == (f"p{i}@example.com" if i % 3 == 0 else None)
        n = s.scalar(select(func.count()).select_from(Contact).where(Contact.workspace_id == workspace.id))
        assert n == 300
        firsts = s.scalar(
            select(func.count())
            .select_from(StageChange)
            .where(StageChange.workspace_id == workspace.id, StageChange.reason == "first seen")
        )
        assert firsts == 300


def test_identify_bumps_version_of_stored_contact(session_factory, workspace) -> None:
    anon = uuid.uuid4().hex
    received = datetime(2024, 5, 10, tzinfo=UTC)
    with session_factory() as s:
        ingest(
            s, workspace.id, [_page(anon, "https://shop.example.fi/", "", "2024-05-02T10:00:00Z")], received_at=received
        )
        s.commit()
    with session_factory() as s:
        before = _contact_of(s, workspace.id, anon).version
    identify = {"type": "identify", "anonymousId": anon, "traits": {"firstName": "Aino", "email": "aino@example.fi"}}
    with session_factory() as s:
        ingest(s, workspace.id, [identify], received_at=received)
        s.commit()
    with session_factory() as s:
        c = _contact_of(s, workspace.id, anon)
        assert c.version == before + 1 and c.first_name == "Aino" and c.email == "aino@example.fi"
        assert c.lifecycle_stage == "interest" and not c.is_anonymous


def test_synchronous_commit_is_turned_off_only_when_asked(session_factory, workspace) -> None:
    received = datetime(2024, 5, 10, tzinfo=UTC)

    def setting(sync: bool | None) -> str | None:
        msg = parse_message(
            {"anonymousId": uuid.uuid4().hex, "event": "X", "messageId": uuid.uuid4().hex},
            0,
            kind="track",
            received_at=received,
        )
        with session_factory() as s:
            store(s, workspace.id, [msg], received_at=received, synchronous_commit=sync)
            value = s.scalar(text("SHOW synchronous_commit")) if s.bind.dialect.name == "postgresql" else None
            s.commit()
        return value

    off, default = setting(False), setting(None)
    with session_factory() as s:
        if s.bind.dialect.name == "postgresql":
            server = s.scalar(text("SHOW synchronous_commit"))
            assert off == "off" and default == server
        n = s.scalar(select(func.count()).select_from(Event).where(Event.workspace_id == workspace.id))
        assert n == 2


def test_channel_rules_cache_is_dropped_on_edit(session_factory, workspace) -> None:
    from suppilo.events import service
    from suppilo.events.schemas import ChannelRuleIn

    with session_factory() as s:
        rules = repo.cached_channel_rules(workspace.id, lambda: service.channel_rules(s, workspace.id))
        assert rules and rules[0]["channel"] != "affiliate"
        service.replace_channel_rules(
            s, workspace.id, [ChannelRuleIn(channel="affiliate", conditions={"medium": ["collab"]})], actor="t"
        )
        s.commit()
        again = repo.cached_channel_rules(workspace.id, lambda: service.channel_rules(s, workspace.id))
        assert [r["channel"] for r in again] == ["affiliate"]
