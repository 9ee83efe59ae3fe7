"""count_matching / matching_ids: workspace scoping, limits, snapshots, and what a caller must provide."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from suppilo.engine.filter_eval import evaluate
from suppilo.engine.filters import parse_filter
from suppilo.segments.compiler import FilterCompileError, contacts, events
from suppilo.segments.service import count_matching, matching_ids
from suppilo.segments.snapshot import load_snapshots
from tests.integration.segments.test_filter_parity import NOW, new_workspace

VIEWED_TWICE = parse_filter(
    {"type": "event", "name": "Viewed", "op": "at_least", "value": 2, "window": {"last_days": 7}}
)


def _contact_with_views(session, ws_id: int, views: int, tag: str) -> int:
    cid = session.execute(
        insert(contacts).returning(contacts.c.id),
        {"workspace_id": ws_id, "lifecycle_stage": "interest", "properties": {}, "created_at": NOW, "updated_at": NOW},
    ).scalar_one()
    for k in range(views):
        session.execute(
            insert(events),
            {
                "workspace_id": ws_id,
                "contact_id": cid,
                "kind": "track",
                "name": "Viewed",
                "properties": {},
                "occurred_at": NOW,
                "received_at": NOW,
                "message_id": f"{tag}-{cid}-{k}",
            },
        )
    return cid


def test_only_the_workspaces_contacts_are_counted(session_factory):
    with session_factory() as session:
        ws, other = new_workspace(session), new_workspace(session)
        mine = [_contact_with_views(session, ws, n, "a") for n in (0, 2, 3, 1)]
        theirs = _contact_with_views(session, other, 5, "b")
        session.commit()
        assert matching_ids(session, ws, VIEWED_TWICE, NOW) == [mine[1], mine[2]]
        assert matching_ids(session, other, VIEWED_TWICE, NOW) == [theirs]
        assert count_matching(session, ws, VIEWED_TWICE, NOW) == 2
        assert matching_ids(session, ws, VIEWED_TWICE, NOW, limit=1) == [mine[1]]
        # Snapshots of another workspace's contact are not loaded.
        snaps = load_snapshots(session, ws, [*mine, theirs], event_names={"Viewed"})
        assert set(snaps) == set(mine)
        assert [evaluate(VIEWED_TWICE, snaps[c], NOW, lambda s: False) for c in mine] == [False, True, True, False]
        assert load_snapshots(session, ws, mine, event_names=set())[mine[2]].events == ()


def test_a_filter_using_a_segment_needs_a_membership_lookup(session_factory):
    with session_factory() as session:
        ws = new_workspace(session)
        flt = parse_filter({"not": {"type": "segment", "op": "in_segment", "value": 3}})
        with pytest.raises(FilterCompileError, match="segment 3"):
            count_matching(session, ws, flt, NOW)
