"""Consent conditions over the real consent ledger: segments (SQL) and the in-memory evaluator agree with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from suppilo.consent import service as consent_service
from suppilo.contacts import service as contacts_service
from suppilo.contacts.schemas import ContactCreate
from suppilo.engine.filter_eval import evaluate
from suppilo.engine.filters import parse_filter
from suppilo.segments import service
from suppilo.segments.schemas import SegmentCreate
from suppilo.segments.snapshot import load_snapshots

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_consent_segments_follow_the_ledger(session, workspace):
    ws = workspace.id

    def person(email: str) -> int:
        return contacts_service.create_contact(session, ws, ContactCreate(email=email, country="US")).id

    opted_in, withdrew, objector, silent = (person(f"{n}@shop.example") for n in ("in", "out", "obj", "none"))
    for cid in (opted_in, withdrew, objector):
        consent_service.record_consent(session, ws, cid, action="granted", at=NOW - timedelta(days=5))
    consent_service.record_consent(session, ws, withdrew, action="withdrawn", at=NOW - timedelta(days=1))
    consent_service.record_consent(session, ws, objector, action="objection", at=NOW - timedelta(days=1))
    session.flush()

    expected = {
        "granted": {opted_in},
        "withdrawn": {withdrew},
        "objected": {objector},
        "no_record": {silent},
    }
    snaps = load_snapshots(session, ws, [opted_in, withdrew, objector, silent])
    for op, members in expected.items():
        flt = {"type": "consent", "topic": "marketing", "op": op}
        seg = service.create_segment(session, ws, SegmentCreate(name=op, filter=flt), NOW)
        got = {m.contact_id for m in service.list_members(session, ws, seg.id)[0]}
        assert got == members, op
        node = parse_filter(flt)
        assert {c for c, s in snaps.items() if evaluate(node, s, NOW, lambda _: False)} == members, op
    # the objector still has a granted statement, but an objection overrides it; consent service agrees
    assert not consent_service.can_send_marketing(session, ws, objector, now=NOW).allowed


def test_a_consent_segment_moves_when_consent_is_given_and_withdrawn(session, workspace):
    ws = workspace.id
    cid = contacts_service.create_contact(session, ws, ContactCreate(email="moves@shop.example", country="US")).id
    seg = service.create_segment(
        session, ws, SegmentCreate(name="mailable", filter={"type": "consent", "topic": "marketing", "op": "granted"})
    )

    def members() -> set[int]:
        return {m.contact_id for m in service.list_members(session, ws, seg.id)[0]}

    assert members() == set()
    consent_service.record_consent(session, ws, cid, action="granted")
    assert members() == {cid}  # at once, without a refresh
    consent_service.record_consent(session, ws, cid, action="withdrawn")
    assert members() == set()
