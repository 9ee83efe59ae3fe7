"""Stored segments: membership diffs with history and timeline events, incremental updates, dependency order,
cycles and bad filters refused with paths, static lists, tenant isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from suppilo.contacts import service as contacts_service
from suppilo.errors import DomainError, NotFound
from suppilo.events.service import record_event
from suppilo.segments import service
from suppilo.segments.compiler import contact_tags, contacts
from suppilo.segments.models import Segment
from suppilo.segments.schemas import SegmentCreate, SegmentUpdate
from tests.integration.segments.test_filter_parity import new_workspace

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
FI = {"type": "contact", "field": "country", "op": "eq", "value": "FI"}
VIP = {"type": "tag", "op": "has_tag", "value": "vip"}
BOUGHT = {"type": "event", "name": "Order Completed", "op": "did"}


def _contact(session, ws: int, country: str | None = None, tags: tuple[str, ...] = ()) -> int:
    cid = session.execute(
        insert(contacts).returning(contacts.c.id),
        {
            "workspace_id": ws,
            "country": country,
            "lifecycle_stage": "interest",
            "properties": {},
            "created_at": NOW,
            "updated_at": NOW,
        },
    ).scalar_one()
    for tag in tags:
        session.execute(insert(contact_tags), {"workspace_id": ws, "contact_id": cid, "tag": tag})
    return int(cid)


def _seg(session, ws: int, name: str, flt: dict | None, kind: str = "dynamic") -> Segment:
    return service.create_segment(session, ws, SegmentCreate(name=name, kind=kind, filter=flt), NOW)


def _members(session, ws: int, sid: int) -> list[int]:
    rows, _ = service.list_members(session, ws, sid, limit=1000)
    return [r.contact_id for r in rows]


def _timeline_names(session, ws: int, cid: int) -> list[str]:
    page = contacts_service.timeline(session, ws, cid)
    return [item.title for item in page.items if item.type == "event"]


def test_refresh_stores_the_difference_with_history_and_timeline_events(session_factory):
    with session_factory() as session:
        ws = new_workspace(session)
        a, b, c = _contact(session, ws, "FI"), _contact(session, ws, "fi"), _contact(session, ws, "SE")
        seg = _seg(session, ws, "Finns", FI)
        assert _members(session, ws, seg.id) == [a, b]
        assert seg.member_count == 2 and seg.last_evaluated_at == NOW
        assert seg.dependencies == ["contact"]

        session.execute(update(contacts).where(contacts.c.id == b).values(country="SE"))
        session.execute(update(contacts).where(contacts.c.id == c).values(country="FI"))
        later = NOW + timedelta(hours=1)
        result = service.refresh_segment(session, ws, seg.id, later)
        assert result.entered[seg.id] == [c] and result.exited[seg.id] == [b]
        assert _members(session, ws, seg.id) == [a, c]
        assert seg.member_count == 2

        changes, _ = service.history(session, ws, seg.id)
        assert [(ch.contact_id, ch.change, ch.at) for ch in changes] == [
            (b, "exited", later),
            (c, "entered", later),
            (b, "entered", NOW),
            (a, "entered", NOW),
        ]
        session.commit()
        assert any("segment.entered" in t for t in _timeline_names(session, ws, a))
        b_events = _timeline_names(session, ws, b)
        assert any("segment.exited" in t for t in b_events) and any("segment.entered" in t for t in b_events)
        # Nothing changed: no new history, no new events.
        again = service.refresh_segment(session, ws, seg.id, later + timedelta(hours=1))
        assert again.entered[seg.id] == [] and again.exited[seg.id] == []
        assert len(service.history(session, ws, seg.id)[0]) == 4
        # Paging the history.
        page1, cursor = service.history(session, ws, seg.id, limit=3)
        page2, end = service.history(session, ws, seg.id, cursor=cursor, limit=3)
        assert len(page1) == 3 and len(page2) == 1 and end is None


def test_incremental_update_touches_only_dependent_segments(session_factory):
    with session_factory() as session:
        ws = new_workspace(session)
        a, b = _contact(session, ws, "FI"), _contact(session, ws, "SE", tags=("vip",))
        finns = _seg(session, ws, "Finns", FI)
        buyers = _seg(session, ws, "Buyers", BOUGHT)
        vips = _seg(session, ws, "VIPs", VIP)
        session.commit()
        before = {s.id: (s.updated_at, s.member_count) for s in service.list_segments(session, ws)}

        record_event(session, ws, a, "Order Completed", {"total": 10}, NOW)
        record_event(session, ws, b, "Page Viewed", {}, NOW)
        result = service.update_for_contacts(session, ws, [a, b], {"events:Order Completed"}, NOW)
        assert result.evaluated == [buyers.id]
        assert result.entered == {buyers.id: [a]} and result.exited == {buyers.id: []}
        assert _members(session, ws, buyers.id) == [a]
        assert buyers.member_count == 1
        session.commit()
        after = {s.id: (s.updated_at, s.member_count) for s in service.list_segments(session, ws)}
        assert after[finns.id] == before[finns.id] and after[vips.id] == before[vips.id]
        assert _members(session, ws, finns.id) == [a] and _members(session, ws, vips.id) == [b]

        # An unrelated event affects nothing.
        assert service.update_for_contacts(session, ws, [a, b], {"events:Page Viewed"}, NOW).evaluated == []
        # A tag change: only the tag segment; the in-memory result agrees with a full SQL refresh.
        session.execute(insert(contact_tags), {"workspace_id": ws, "contact_id": a, "tag": "vip"})
        inc = service.update_for_contacts(session, ws, [a], {"tags"}, NOW)
        assert inc.evaluated == [vips.id] and inc.entered[vips.id] == [a]
        full = service.refresh_all(session, ws, NOW)
        assert sorted(full.evaluated) == sorted([finns.id, buyers.id, vips.id])
        assert all(v == [] for v in full.entered.values()) and all(v == [] for v in full.exited.values())


def test_segments_using_segments_are_evaluated_in_dependency_order(session_factory):
    with session_factory() as session:
        ws = new_workspace(session)
        a = _contact(session, ws, "FI")
        b = _contact(session, ws, "FI", tags=("vip",))
        outer = _seg(session, ws, "Outer", FI)  # re-pointed below to use the later segments
        vips = _seg(session, ws, "VIPs", VIP)
        finn_vips = _seg(
            session, ws, "Finnish VIPs", {"and": [FI, {"type": "segment", "op": "in_segment", "value": vips.id}]}
        )
        assert _members(session, ws, finn_vips.id) == [b]
        service.update_segment(
            session,
            ws,
            outer.id,
            SegmentUpdate(filter={"not": {"type": "segment", "op": "in_segment", "value": finn_vips.id}}),
            NOW,
        )
        assert outer.dependencies == [f"segment:{finn_vips.id}"]
        assert _members(session, ws, outer.id) == [a]

        full = service.refresh_all(session, ws, NOW + timedelta(minutes=1))
        assert full.evaluated == [vips.id, finn_vips.id, outer.id]

        # a gets the tag: VIPs, then Finnish VIPs, then Outer all change in one incremental pass.
        session.execute(insert(contact_tags), {"workspace_id": ws, "contact_id": a, "tag": "vip"})
        inc = service.update_for_contacts(session, ws, [a], {"tags"}, NOW + timedelta(minutes=2))
        assert inc.evaluated == [vips.id, finn_vips.id, outer.id]
        assert inc.entered[vips.id] == [a] and inc.entered[finn_vips.id] == [a] and inc.exited[outer.id] == [a]
        assert _members(session, ws, outer.id) == []
        # Deleting a segment that others use is refused.
        with pytest.raises(DomainError, match="use this segment"):
            service.delete_segment(session, ws, vips.id)
        service.delete_segment(session, ws, outer.id)
        with pytest.raises(NotFound):
            service.get_segment(session, ws, outer.id)


def test_cycles_are_refused_with_the_path(session_factory):
    with session_factory() as session:
        ws = new_workspace(session)
        first = _seg(session, ws, "First", FI)
        second = _seg(session, ws, "Second", {"and": [VIP, {"type": "segment", "op": "in_segment", "value": first.id}]})
        with pytest.raises(DomainError) as exc:
            service.update_segment(
                session,
                ws,
                first.id,
                SegmentUpdate(filter={"or": [FI, {"type": "segment", "op": "in_segment", "value": second.id}]}),
            )
        assert exc.value.field == "filter.or[1].value" and "would use itself" in exc.value.message
        with pytest.raises(DomainError) as exc:
            service.update_segment(
                session, ws, first.id, SegmentUpdate(filter={"type": "segment", "op": "in_segment", "value": first.id})
            )
        assert exc.value.field == "filter.value"
        assert service.get_segment(session, ws, first.id).filter["field"] == "country"
        assert first.dependencies == ["contact"]


def test_invalid_filters_are_answered_with_the_path(session_factory):
    with session_factory() as session:
        ws = new_workspace(session)
        bad = {"and": [FI, VIP, {"type": "contact", "field": "country", "op": "gt", "value": 3}]}
        with pytest.raises(DomainError) as exc:
            _seg(session, ws, "Bad", bad)
        assert exc.value.field == "filter.and[2].op" and exc.value.code == "invalid_filter"
        with pytest.raises(DomainError) as exc:
            _seg(session, ws, "Bad", {"and": [FI, {"type": "contact", "field": "properties.plan", "op": "is_set"}]})
        assert exc.value.field == "filter.and[1].field" and "plan" in exc.value.message
        with pytest.raises(DomainError) as exc:
            service.preview_count(session, ws, {"and": [FI, VIP, {"type": "tag", "op": "has_tag", "value": ""}]})
        assert exc.value.field == "filter.and[2].value"
        with pytest.raises(DomainError) as exc:
            _seg(session, ws, "Dynamic without a filter", None)
        assert exc.value.field == "filter"
        assert service.list_segments(session, ws) == []


def test_static_lists(session_factory):
    with session_factory() as session:
        ws, other = new_workspace(session), new_workspace(session)
        a, b, c = _contact(session, ws, "FI"), _contact(session, ws, "SE"), _contact(session, ws, "FI")
        foreign = _contact(session, other, "FI")
        lst = _seg(session, ws, "Webinar guests", None, kind="static")
        finns_on_list = _seg(
            session, ws, "Finnish guests", {"and": [FI, {"type": "segment", "op": "in_segment", "value": lst.id}]}
        )
        assert _members(session, ws, finns_on_list.id) == []

        assert service.add_members(session, ws, lst.id, [a, b], NOW) == 2
        assert service.add_members(session, ws, lst.id, [b, c], NOW) == 1
        assert _members(session, ws, lst.id) == [a, b, c] and lst.member_count == 3
        # The dynamic segment that uses the list followed at once.
        assert _members(session, ws, finns_on_list.id) == [a, c]
        assert service.remove_members(session, ws, lst.id, [c, foreign], NOW + timedelta(minutes=1)) == 1
        assert _members(session, ws, lst.id) == [a, b] and lst.member_count == 2
        assert _members(session, ws, finns_on_list.id) == [a]
        changes, _ = service.history(session, ws, lst.id)
        assert (changes[0].contact_id, changes[0].change, changes[0].reason) == (c, "exited", "removed")

        with pytest.raises(NotFound) as exc:
            service.add_members(session, ws, lst.id, [a, foreign], NOW)
        assert exc.value.field == "contact_ids[1]"
        with pytest.raises(DomainError, match="static list"):
            service.add_members(session, ws, finns_on_list.id, [a], NOW)
        with pytest.raises(DomainError):
            service.update_segment(session, ws, lst.id, SegmentUpdate(filter=FI))
        assert [(s.name, at) for s, at in service.contact_segments(session, ws, a)] == [
            ("Webinar guests", NOW),
            ("Finnish guests", NOW),
        ]
        # A refresh leaves a static list alone.
        assert service.refresh_segment(session, ws, lst.id, NOW).evaluated == []
        assert _members(session, ws, lst.id) == [a, b]


def test_another_workspaces_segments_are_not_found(session_factory):
    with session_factory() as session:
        ws, other = new_workspace(session), new_workspace(session)
        _contact(session, other, "FI")
        theirs = _seg(session, other, "Theirs", FI)
        for call in (
            lambda: service.get_segment(session, ws, theirs.id),
            lambda: service.refresh_segment(session, ws, theirs.id, NOW),
            lambda: service.list_members(session, ws, theirs.id),
            lambda: service.history(session, ws, theirs.id),
            lambda: service.delete_segment(session, ws, theirs.id),
            lambda: service.add_members(session, ws, theirs.id, [1], NOW),
        ):
            with pytest.raises(NotFound):
                call()
        with pytest.raises(DomainError) as exc:
            _seg(session, ws, "Uses theirs", {"type": "segment", "op": "in_segment", "value": theirs.id})
        assert exc.value.field == "filter.value" and "does not exist" in exc.value.message
        assert service.refresh_all(session, ws, NOW).evaluated == []
        assert _members(session, other, theirs.id) != []
        assert session.scalar(select(Segment.member_count).where(Segment.id == theirs.id)) == 1


def test_the_periodic_job_refreshes_time_relative_segments_and_their_users(session_factory):
    from suppilo.db.base import utcnow
    from suppilo.segments.tasks import run_time_refresh

    then = utcnow() - timedelta(days=5)
    with session_factory() as session:
        ws = new_workspace(session)
        a, b = _contact(session, ws, "FI"), _contact(session, ws, "FI")
        record_event(session, ws, a, "Viewed", {}, then - timedelta(hours=1))
        recent = _seg(
            session, ws, "Viewed lately", {"type": "event", "name": "Viewed", "op": "did", "window": {"last_days": 2}}
        )
        recent = service.refresh_segment(session, ws, recent.id, then)
        sid = recent.evaluated[0]
        users = _seg(
            session,
            ws,
            "Finns not lately",
            {"and": [FI, {"not": {"type": "segment", "op": "in_segment", "value": sid}}]},
        )
        finns = _seg(session, ws, "Finns", FI)
        session.commit()
        assert _members(session, ws, sid) == [a] and _members(session, ws, users.id) == [b]
        assert "time" in service.get_segment(session, ws, sid).dependencies
        users_id, finns_id = users.id, finns.id
        finns_at = finns.last_evaluated_at

    changes = run_time_refresh(session_factory)
    assert changes[ws] == 2  # a left "Viewed lately" and entered "Finns not lately"
    with session_factory() as session:
        assert _members(session, ws, sid) == []
        assert _members(session, ws, users_id) == [a, b]
        assert service.get_segment(session, ws, finns_id).last_evaluated_at == finns_at


def test_incremental_and_full_evaluation_agree(session_factory):
    from suppilo.segments.compiler import orders

    with session_factory() as session:
        ws = new_workspace(session)
        ids = [
            _contact(session, ws, country, tags)
            for country, tags in (("FI", ("vip",)), ("SE", ()), (None, ("vip", "b2b")), ("fi", ("b2b",)), ("NO", ()))
        ]
        filters = [
            {"and": [FI, {"not": VIP}]},
            {
                "or": [
                    {"type": "tag", "op": "has_any_tags", "value": ["b2b"]},
                    {"type": "order_count", "op": "gte", "value": 2},
                ]
            },
            {"type": "order_total", "currency": "EUR", "op": "gt", "value": 5000, "window": {"last_days": 30}},
            {
                "type": "event",
                "name": "Viewed",
                "op": "at_least",
                "value": 2,
                "where": [{"path": "page", "op": "eq", "value": "pricing"}],
            },
            {"type": "contact", "field": "country", "op": "neq", "value": "SE"},
        ]
        segs = [_seg(session, ws, f"S{i}", f) for i, f in enumerate(filters)]
        user = _seg(
            session,
            ws,
            "Users",
            {
                "and": [
                    {"type": "segment", "op": "in_segment", "value": segs[1].id},
                    {"not": {"type": "segment", "op": "in_segment", "value": segs[3].id}},
                ]
            },
        )
        later = NOW + timedelta(days=1)
        for k, (cid, total) in enumerate(((ids[1], 3000), (ids[1], 4000), (ids[4], 9000))):
            session.execute(
                insert(orders),
                {
                    "workspace_id": ws,
                    "external_id": f"o{k}",
                    "contact_id": cid,
                    "placed_at": NOW,
                    "currency": "EUR",
                    "total_minor": total,
                    "status": "completed",
                    "properties": {},
                },
            )
        for k, cid in enumerate((ids[0], ids[0], ids[2], ids[1], ids[1])):
            record_event(
                session, ws, cid, "Viewed", {"page": "Pricing" if k != 4 else "home"}, NOW + timedelta(minutes=k)
            )
        session.execute(update(contacts).where(contacts.c.id == ids[2]).values(country="FI"))
        session.execute(insert(contact_tags), {"workspace_id": ws, "contact_id": ids[4], "tag": "b2b"})

        inc = service.update_for_contacts(session, ws, ids, {"contact", "tags", "orders", "events"}, later)
        assert inc.evaluated[-1] == user.id and len(inc.evaluated) == 6
        assert sum(map(len, inc.entered.values())) > 0
        full = service.refresh_all(session, ws, later)
        assert {k: v for k, v in full.entered.items() if v} == {} and {k: v for k, v in full.exited.items() if v} == {}
        # Memberships as the compiled SQL sees them.
        assert _members(session, ws, segs[1].id) == [ids[1], ids[2], ids[3], ids[4]]
        assert _members(session, ws, segs[2].id) == [ids[1], ids[4]]
        assert _members(session, ws, segs[3].id) == [ids[0]]
        assert _members(session, ws, user.id) == [ids[1], ids[2], ids[3], ids[4]]


def test_per_event_updates_agree_with_full_evaluation_as_segments_change(session_factory):
    """The per-event path remembers what the last update of a kind read (on PostgreSQL it reads that again with the
    segment list, lock and memberships in one round trip): after segments that read more are added, and after they
    are deleted, its memberships stay those of a full evaluation."""
    viewed = {"type": "event", "name": "Viewed", "op": "at_least", "value": 2, "window": {"last_days": 7}}
    with session_factory() as session:
        ws = new_workspace(session)
        ids = [_contact(session, ws, c, t) for c, t in (("FI", ("vip",)), ("SE", ("b2b",)), ("FI", ()), ("NO", ()))]
        vip = _seg(session, ws, "vip", VIP)

        def tag(cid: int, name: str, at: datetime) -> dict[int, list[int]]:
            session.execute(insert(contact_tags), {"workspace_id": ws, "contact_id": cid, "tag": name})
            inc = service.update_for_contacts(session, ws, [cid], {"tags"}, at)
            full = service.refresh_all(session, ws, at)
            assert not any(full.entered.values()) and not any(full.exited.values()), (full.entered, full.exited)
            return {sid: cids for sid, cids in inc.entered.items() if cids}

        assert tag(ids[1], "vip", NOW) == {vip.id: [ids[1]]}
        # a segment reading tags and events: the remembered reads (tags only) fall short once
        keen = _seg(session, ws, "keen", {"and": [{"type": "tag", "op": "has_tag", "value": "b2b"}, viewed]})
        buyers = _seg(session, ws, "buyers", {"and": [FI, {"type": "order_count", "op": "gte", "value": 0}]})
        for k in range(2):
            record_event(session, ws, ids[2], "Viewed", {}, NOW + timedelta(minutes=k))
            record_event(session, ws, ids[3], "Viewed", {}, NOW + timedelta(minutes=k))
        assert tag(ids[2], "b2b", NOW + timedelta(hours=1)) == {keen.id: [ids[2]]}
        assert tag(ids[3], "b2b", NOW + timedelta(hours=2)) == {keen.id: [ids[3]]}
        # outside the window: exits (now read with what the last update read)
        inc = service.update_for_contacts(session, ws, [ids[2]], {"tags"}, NOW + timedelta(days=8))
        assert inc.exited[keen.id] == [ids[2]]
        assert _members(session, ws, keen.id) == [ids[3]]
        assert _members(session, ws, buyers.id) == [ids[0], ids[2]]
        # the segments reading more are gone: the remembered reads load more than needed, results unchanged
        service.delete_segment(session, ws, keen.id)
        assert tag(ids[3], "vip", NOW + timedelta(days=8)) == {vip.id: [ids[3]]}
        assert _members(session, ws, vip.id) == [ids[0], ids[1], ids[3]]


def test_deleting_a_workspace_removes_its_membership_history_and_count_deltas(session_factory):
    """Membership and history rows have no key to workspaces: they go with their segment, which goes with it."""
    from suppilo.segments.models import SegmentCountDelta, SegmentMembership, SegmentMembershipChange
    from suppilo.workspaces.models import Workspace

    with session_factory() as session:
        ws, other = new_workspace(session), new_workspace(session)
        a, b = _contact(session, ws, "FI"), _contact(session, other, "FI")
        for w, c in ((ws, a), (other, b)):
            seg = _seg(session, w, "Buyers", BOUGHT)
            record_event(session, w, c, "Order Completed", {"total": 10}, NOW)
            service.update_for_contacts(session, w, [c], {"events:Order Completed"}, NOW)
            assert seg.member_count == 1
        session.commit()

        def rows(w: int) -> list[int]:
            segs = select(Segment.id).where(Segment.workspace_id == w)
            return [
                len(session.scalars(select(t.segment_id).where(t.segment_id.in_(segs))).all())
                for t in (SegmentMembership, SegmentMembershipChange, SegmentCountDelta)
            ]

        assert rows(ws) == [1, 1, 1] and rows(other) == [1, 1, 1]
        session.execute(Workspace.__table__.delete().where(Workspace.__table__.c.id == ws))
        session.commit()
        assert session.scalar(select(SegmentMembership.segment_id).where(SegmentMembership.workspace_id == ws)) is None
        assert (
            session.scalar(select(SegmentMembershipChange.id).where(SegmentMembershipChange.workspace_id == ws)) is None
        )
        assert rows(other) == [1, 1, 1]
        assert session.scalar(select(Segment.member_count).where(Segment.workspace_id == other)) == 1
