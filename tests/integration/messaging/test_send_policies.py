"""Sending policies with the real sender and a real SMTP server: the workspace frequency cap for marketing mail
(deferred by priority, never dropped) and quiet hours in the contact's time zone."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from suppilo.db.base import utcnow
from suppilo.messaging import outbox
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.models import Workspace
from suppilo.workspaces.schemas import WorkspaceUpdate
from tests.integration.messaging.outbox_support import RENDERED, SmtpSink, add_contact, drain, make_sender


def _set_policies(factory, ws_id, **changes):
    with factory() as s:
        workspaces_service.update_workspace(s, ws_id, WorkspaceUpdate(**changes))
        s.commit()


def _enqueue(factory, ws_id, key, contact_id, **kw):
    with factory() as s:
        row = outbox.enqueue(s, ws_id, dedupe_key=key, contact_id=contact_id, rendered=RENDERED, **kw)
        s.commit()
        assert row is not None
        return row.id


def _rows(factory, ws_id):
    with factory() as s:
        rows = list(s.scalars(select(OutboxMessage).where(OutboxMessage.workspace_id == ws_id)))
        s.expunge_all()
        return {r.id: r for r in rows}


def _run_at(factory, sink, ws_id, moment, **overrides):
    """Drain the outbox once with the sender's clock standing at ``moment``; returns the run's stats."""
    sender, transport = make_sender(factory, sink, ws_id, **overrides)
    sender.clock = lambda: moment
    return asyncio.run(drain(sender, transport))


def _received_ids(sink):
    return Counter(int(str(r.message["Message-ID"]).split("outbox-")[1].split(".")[0]) for r in sink.received)


def test_cap_defers_the_fourth_marketing_message_until_the_window_frees_a_slot(session_factory, workspace):
    ws = workspace.id
    _set_policies(session_factory, ws, frequency_cap={"max": 3, "days": 7})
    alice = add_contact(session_factory, ws, "alice@example.com", country="US")
    ids = [_enqueue(session_factory, ws, f"promo:{i}", alice) for i in range(4)]
    t0 = utcnow() + timedelta(seconds=1)
    with SmtpSink() as sink:
        stats = _run_at(session_factory, sink, ws, t0)
        assert stats.sent == 3 and stats.held == 1
        rows = _rows(session_factory, ws)
        held = [r for r in rows.values() if r.status == "deferred"]
        assert len(held) == 1 and held[0].id == ids[3]  # same priority: the later one waits
        assert held[0].last_error == "frequency_cap"
        assert held[0].next_attempt_at == t0 + timedelta(days=7)  # when the oldest of the three leaves the window
        assert held[0].attempts == 0
        # A minute before the window frees a slot, nothing goes.
        stats = _run_at(session_factory, sink, ws, t0 + timedelta(days=7) - timedelta(minutes=1))
        assert stats.sent == 0 and len(sink.received) == 3
        stats = _run_at(session_factory, sink, ws, t0 + timedelta(days=7))
        assert stats.sent == 1
        assert _received_ids(sink) == Counter(ids)
    assert {r.status for r in _rows(session_factory, ws).values()} == {"sent"}


def test_transactional_mail_is_never_capped_and_does_not_count(session_factory, workspace):
    ws = workspace.id
    _set_policies(session_factory, ws, frequency_cap={"max": 1, "days": 1})
    bob = add_contact(session_factory, ws, "bob@example.com", country="US")
    receipts = [_enqueue(session_factory, ws, f"receipt:{i}", bob, kind="transactional") for i in range(3)]
    promo = _enqueue(session_factory, ws, "promo:1", bob)
    t0 = utcnow() + timedelta(seconds=1)
    with SmtpSink() as sink:
        _run_at(session_factory, sink, ws, t0)
        rows = _rows(session_factory, ws)
        assert all(rows[i].status == "sent" for i in [*receipts, promo])  # receipts did not use the one slot
        later = [
            _enqueue(session_factory, ws, "promo:2", bob),
            _enqueue(session_factory, ws, "receipt:4", bob, kind="transactional"),
        ]
        _run_at(session_factory, sink, ws, t0 + timedelta(hours=1))
        rows = _rows(session_factory, ws)
        assert rows[later[0]].status == "deferred" and rows[later[0]].last_error == "frequency_cap"
        assert rows[later[0]].next_attempt_at == rows[promo].sent_at + timedelta(days=1)
        assert rows[later[1]].status == "sent"
        assert len(sink.received) == 5


def test_higher_priority_takes_the_last_slot_in_the_same_claim(session_factory, workspace):
    ws = workspace.id
    _set_policies(session_factory, ws, frequency_cap={"max": 2, "days": 7})
    carol = add_contact(session_factory, ws, "carol@example.com", country="US")
    dave = add_contact(session_factory, ws, "dave@example.com", country="US")
    low = [_enqueue(session_factory, ws, f"newsletter:{i}", carol, priority=0) for i in range(2)]
    high = _enqueue(session_factory, ws, "cart-reminder", carol, priority=10)
    dave_low = _enqueue(session_factory, ws, "newsletter:dave", dave, priority=-5)
    # The reminder already waited once: the claim reads it after the queued ones, in the same chunk.
    with session_factory() as s:
        s.execute(update(OutboxMessage).where(OutboxMessage.id == high).values(status="deferred"))
        s.commit()
    t0 = utcnow() + timedelta(seconds=1)
    with SmtpSink() as sink:
        _run_at(session_factory, sink, ws, t0)
        rows = _rows(session_factory, ws)
        assert rows[high].status == "sent"
        assert [rows[i].status for i in low] == ["sent", "deferred"]  # the older of the two equal ones went
        assert rows[dave_low].status == "sent"  # another contact's slots are its own
        _run_at(session_factory, sink, ws, t0 + timedelta(days=7))
        assert _received_ids(sink) == Counter([*low, high, dave_low])


def test_waiting_higher_priority_message_outside_the_claimed_chunk_keeps_the_slot(session_factory, workspace):
    ws = workspace.id
    _set_policies(session_factory, ws, frequency_cap={"max": 1, "days": 2})
    erin = add_contact(session_factory, ws, "erin@example.com", country="US")
    urgent = _enqueue(session_factory, ws, "urgent", erin, priority=5)
    # The urgent one already waited once (deferred): the claim reads queued rows before deferred ones, so with a
    # chunk of one, the low-priority queued message is claimed first.
    with session_factory() as s:
        s.execute(update(OutboxMessage).where(OutboxMessage.id == urgent).values(status="deferred"))
        s.commit()
    routine = _enqueue(session_factory, ws, "routine", erin, priority=0)
    t0 = utcnow() + timedelta(seconds=1)
    with SmtpSink() as sink:
        _run_at(session_factory, sink, ws, t0, chunk_size=1)
        rows = _rows(session_factory, ws)
        assert rows[urgent].status == "sent"
        assert rows[routine].status == "deferred" and rows[routine].last_error == "frequency_cap"
        assert rows[routine].next_attempt_at == rows[urgent].sent_at + timedelta(days=2)
        assert len(sink.received) == 1


def _next_utc(hour: int, minute: int, after: datetime) -> datetime:
    moment = after.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return moment if moment > after else moment + timedelta(days=1)


def test_quiet_hours_hold_helsinki_but_not_new_york_at_the_same_instant(session_factory, workspace):
    ws = workspace.id
    _set_policies(session_factory, ws, quiet_hours={"start": "21:00", "end": "08:00"}, timezone="UTC")
    helsinki = add_contact(session_factory, ws, "hanna@example.com", country="US", timezone="Europe/Helsinki")
    new_york = add_contact(session_factory, ws, "nick@example.com", country="US", timezone="America/New_York")
    no_zone = add_contact(session_factory, ws, "uma@example.com", country="US")  # the workspace's zone: UTC
    bad_zone = add_contact(session_factory, ws, "zed@example.com", country="US", timezone="Not/AZone")
    ids = {
        "helsinki": _enqueue(session_factory, ws, "h", helsinki),
        "new_york": _enqueue(session_factory, ws, "n", new_york),
        "no_zone": _enqueue(session_factory, ws, "u", no_zone),
        "bad_zone": _enqueue(session_factory, ws, "z", bad_zone),
        "helsinki_receipt": _enqueue(session_factory, ws, "hr", helsinki, kind="transactional"),
    }
    # 21:30 UTC: 23:30 or 00:30 in Helsinki, 16:30 or 17:30 in New York, 21:30 in UTC.
    moment = _next_utc(21, 30, utcnow())
    hki = ZoneInfo("Europe/Helsinki")
    local = moment.astimezone(hki)
    morning_date = local.date() if local.time() < time(8) else local.date() + timedelta(days=1)
    hki_morning = datetime.combine(morning_date, time(8), tzinfo=hki).astimezone(UTC)
    utc_morning = datetime.combine(moment.date() + timedelta(days=1), time(8), tzinfo=UTC)
    with SmtpSink() as sink:
        stats = _run_at(session_factory, sink, ws, moment)
        rows = _rows(session_factory, ws)
        assert rows[ids["new_york"]].status == "sent"
        assert rows[ids["helsinki_receipt"]].status == "sent"  # transactional mail ignores quiet hours
        assert rows[ids["helsinki"]].status == "deferred" and rows[ids["helsinki"]].last_error == "quiet_hours"
        assert rows[ids["helsinki"]].next_attempt_at == hki_morning
        for key in ("no_zone", "bad_zone"):  # an unknown zone falls back to the workspace's
            assert rows[ids[key]].status == "deferred" and rows[ids[key]].next_attempt_at == utc_morning
        assert stats.held == 3
        _run_at(session_factory, sink, ws, hki_morning)
        assert _rows(session_factory, ws)[ids["helsinki"]].status == "sent"
        _run_at(session_factory, sink, ws, utc_morning)
        assert _received_ids(sink) == Counter(ids.values())


def test_suppression_and_consent_still_win_over_policies(session_factory, workspace):
    from suppilo.messaging import suppression

    ws = workspace.id
    _set_policies(
        session_factory, ws, frequency_cap={"max": 1, "days": 7}, quiet_hours={"start": "00:00", "end": "00:01"}
    )
    gone = add_contact(session_factory, ws, "gone@example.com", country="US")
    no_consent = add_contact(session_factory, ws, "fi@example.fi", country="FI")
    a = _enqueue(session_factory, ws, "a", gone)
    b = _enqueue(session_factory, ws, "b", no_consent)
    with session_factory() as s:
        suppression.suppress(s, ws, "gone@example.com", "unsubscribe")
        s.commit()
    with SmtpSink() as sink:
        _run_at(session_factory, sink, ws, _next_utc(12, 0, utcnow()))
        rows = _rows(session_factory, ws)
        assert rows[a].status == "suppressed" and rows[b].status == "skipped"
        assert sink.received == []


def test_nothing_is_dropped_under_cap_and_quiet_hours_over_a_simulated_week(session_factory, workspace):
    ws = workspace.id
    _set_policies(
        session_factory, ws, frequency_cap={"max": 2, "days": 1}, quiet_hours={"start": "22:00", "end": "07:30"}
    )
    zones = {"Europe/Helsinki": None, "Europe/Riga": None, "America/New_York": None}
    for i, tz in enumerate(zones):
        zones[tz] = add_contact(session_factory, ws, f"p{i}@example.com", country="US", timezone=tz)
    ids = []
    for n in range(6):
        for tz, contact in zones.items():
            ids.append(_enqueue(session_factory, ws, f"{tz}:{n}", contact, priority=n % 3))
    start = utcnow() + timedelta(seconds=1)
    with SmtpSink() as sink:
        moment = start
        while moment < start + timedelta(days=5):
            _run_at(session_factory, sink, ws, moment)
            moment += timedelta(minutes=47)
        rows = _rows(session_factory, ws)
    assert {r.status for r in rows.values()} == {"sent"}
    assert _received_ids(sink) == Counter(ids)  # each exactly once
    by_contact: dict[int, list[OutboxMessage]] = {}
    for r in rows.values():
        by_contact.setdefault(r.contact_id, []).append(r)
    contact_zone = {c: tz for tz, c in zones.items()}
    for contact, sent in by_contact.items():
        times = sorted(r.sent_at for r in sent)
        for t in times:  # never more than 2 in any day
            assert sum(1 for u in times if t - timedelta(days=1) < u <= t) <= 2
        tz = ZoneInfo(contact_zone[contact])
        for t in times:  # never inside 22:00-07:30 local
            wall = t.astimezone(tz).time()
            assert time(7, 30) <= wall < time(22, 0), (contact_zone[contact], t)
        # Higher priority first: a message never went out while a higher-priority one of the contact was waiting.
        for r in sent:
            assert not any(
                o.priority > r.priority and o.sent_at > r.sent_at and o.created_at <= r.sent_at for o in sent
            )


def test_policy_settings_are_validated_through_the_workspace_api(client, workspace):
    headers = workspace.auth("admin")
    res = client.patch(
        "/api/v1/workspace",
        json={"frequency_cap": {"max": 3, "days": 7}, "quiet_hours": {"start": "21:00", "end": "08:00"}},
        headers=headers,
    )
    assert res.status_code == 200
    assert res.json()["frequency_cap"] == {"max": 3, "days": 7}
    assert res.json()["quiet_hours"] == {"start": "21:00", "end": "08:00"}
    assert client.get("/api/v1/workspace", headers=headers).json()["quiet_hours"] == {"start": "21:00", "end": "08:00"}
    bad = [
        ({"frequency_cap": {"max": 0, "days": 7}}, "frequency_cap.max"),
        ({"frequency_cap": {"max": 3, "days": True}}, "frequency_cap.days"),
        ({"frequency_cap": {"max": 3}}, "frequency_cap.days"),
        ({"frequency_cap": {"max": 3, "days": 7, "per": "week"}}, "frequency_cap.per"),
        ({"quiet_hours": {"start": "9pm", "end": "08:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "21:00", "end": "24:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "21:00", "end": "21:00"}}, "quiet_hours.end"),
    ]
    for body, path in bad:
        res = client.patch("/api/v1/workspace", json=body, headers=headers)
        assert res.status_code == 422, body
        assert res.json()["error"]["path"] == path, (body, res.json())
    # Unchanged by the refused requests; null removes a policy.
    res = client.patch("/api/v1/workspace", json={"frequency_cap": None}, headers=headers)
    assert res.status_code == 200
    assert res.json()["frequency_cap"] is None and res.json()["quiet_hours"] == {"start": "21:00", "end": "08:00"}
    assert client.patch("/api/v1/workspace", json={"quiet_hours": {}}, headers=headers).status_code == 422


@pytest.mark.parametrize("stored", [{"max": "lots"}, "3 per week"])
def test_a_stored_setting_that_no_longer_validates_does_not_stop_sending(session_factory, workspace, stored):
    ws = workspace.id
    with session_factory() as s:
        s.get(Workspace, ws).settings = {"frequency_cap": stored}
        s.commit()
    frank = add_contact(session_factory, ws, "frank@example.com", country="US")
    ids = [_enqueue(session_factory, ws, f"p{i}", frank) for i in range(2)]
    with SmtpSink() as sink:
        _run_at(session_factory, sink, ws, utcnow() + timedelta(seconds=1))
        assert _received_ids(sink) == Counter(ids)


def test_messages_another_sender_is_sending_count_toward_the_cap(session_factory, workspace):
    ws = workspace.id
    _set_policies(session_factory, ws, frequency_cap={"max": 2, "days": 7})
    gina = add_contact(session_factory, ws, "gina@example.com", country="US")
    ids = [_enqueue(session_factory, ws, f"p{i}", gina) for i in range(4)]
    with SmtpSink() as sink:
        first = make_sender(session_factory, sink, ws)[0]
        second = make_sender(session_factory, sink, ws)[0]
        claimed = first.claim(2)  # committed as sending, not yet recorded as sent
        assert sorted(p.outbox_id for p in claimed) == ids[:2]
        assert second.claim(4) == []  # the two in flight fill the cap
        rows = _rows(session_factory, ws)
        assert [rows[i].status for i in ids] == ["sending", "sending", "deferred", "deferred"]
        assert all(rows[i].last_error == "frequency_cap" for i in ids[2:])


def test_two_senders_claiming_at_once_never_exceed_the_cap(session_factory, workspace):
    import threading

    ws = workspace.id
    _set_policies(session_factory, ws, frequency_cap={"max": 2, "days": 7})
    with SmtpSink() as sink:
        for round_ in range(4):
            contact = add_contact(session_factory, ws, f"race{round_}@example.com", country="US")
            for i in range(6):
                _enqueue(session_factory, ws, f"race{round_}:{i}", contact)
            senders = [make_sender(session_factory, sink, ws)[0] for _ in range(3)]
            barrier = threading.Barrier(len(senders))
            got: list[int] = []

            def claim(sender):
                barrier.wait()
                got.extend(p.outbox_id for p in sender.claim(2))

            threads = [threading.Thread(target=claim, args=(s,)) for s in senders]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(got) == 2, got
            with session_factory() as s:
                statuses = Counter(
                    s.scalars(select(OutboxMessage.status).where(OutboxMessage.contact_id == contact)).all()
                )
            assert statuses == Counter({"sending": 2, "deferred": 4})
