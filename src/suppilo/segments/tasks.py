"""Periodic jobs: keep segments current as things happen (new events, stage changes, edited contacts), and
re-evaluate those whose membership can change with the clock alone."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.contacts.models import Contact, StageChange
from suppilo.db.base import utcnow
from suppilo.events.models import Event
from suppilo.events.stream import lock_cursor, read
from suppilo.segments import service
from suppilo.segments.models import Segment, SegmentCountDelta

LIMIT = 5000
# Events that also change what order conditions see.
ORDER_EVENTS = frozenset({"Order Completed", "Order Updated", "Order Refunded", "Order Cancelled"})
# Contacts edited within this long before the last look are looked at again (transactions that committed late).
CONTACT_OVERLAP = timedelta(seconds=5)
# Above this many edited contacts (an import), the affected segments are refreshed in SQL instead, in one pass.
BULK_EDITS = 20_000


def _dynamic_workspaces(session: Session) -> set[int]:
    return {
        int(ws) for (ws,) in session.execute(select(Segment.workspace_id).where(Segment.kind == "dynamic").distinct())
    }


def update_from_events(session: Session, *, limit: int = LIMIT) -> int:
    """Re-evaluate, for the contacts of new events, the segments that depend on those events (or on orders);
    returns how many events were read."""
    t = Event.__table__
    cursor = lock_cursor(session, "segments.events", t)
    rows = read(session, cursor, t, [t.c.workspace_id, t.c.contact_id, t.c.name], limit)
    if not rows:
        return 0
    wanted = _dynamic_workspaces(session)
    groups: dict[tuple[int, str], set[int]] = defaultdict(set)
    for _, ws, contact_id, name in rows:
        if contact_id is not None and ws in wanted:
            groups[(ws, name)].add(contact_id)
    now = utcnow()
    for (ws, name), contacts in sorted(groups.items()):
        changed = {f"events:{name}"} | ({"orders"} if name in ORDER_EVENTS else set())
        service.update_for_contacts(session, ws, sorted(contacts), changed, now, reason=f"event:{name}"[:64])
    return len(rows)


def update_from_stage_changes(session: Session, *, limit: int = LIMIT) -> int:
    """Re-evaluate stage-dependent segments for contacts whose lifecycle stage changed; returns rows read."""
    t = StageChange.__table__
    cursor = lock_cursor(session, "segments.stage_changes", t)
    rows = read(session, cursor, t, [t.c.workspace_id, t.c.contact_id], limit)
    if not rows:
        return 0
    wanted = _dynamic_workspaces(session)
    by_ws: dict[int, set[int]] = defaultdict(set)
    for _, ws, contact_id in rows:
        if ws in wanted:
            by_ws[ws].add(contact_id)
    now = utcnow()
    for ws, contacts in sorted(by_ws.items()):
        service.update_for_contacts(session, ws, sorted(contacts), {"stages"}, now, reason="stage")
    return len(rows)


def update_from_contact_edits(session: Session, since: datetime, now: datetime) -> int:
    """Re-evaluate property-dependent segments for contacts edited since ``since``; returns how many contacts."""
    total = 0
    for ws in sorted(_dynamic_workspaces(session)):
        ids = list(
            session.scalars(
                select(Contact.id)
                .where(Contact.workspace_id == ws, Contact.updated_at >= since, Contact.updated_at <= now)
                .limit(BULK_EDITS + 1)
            )
        )
        if len(ids) > BULK_EDITS:
            deps = session.execute(
                select(Segment.id, Segment.dependencies).where(Segment.workspace_id == ws, Segment.kind == "dynamic")
            ).all()
            for sid, d in deps:
                if {"contact", "company", "tags"} & set(d or []):
                    service.refresh_segment(session, ws, sid, now, reason="contact")
            total += len(ids)
            continue
        for start in range(0, len(ids), 2000):
            service.update_for_contacts(
                session, ws, ids[start : start + 2000], {"contact", "company", "tags"}, now, reason="contact"
            )
        total += len(ids)
    return total


_last_contact_look: dict[str, datetime] = {}


def run_live_updates(factory: sessionmaker[Session]) -> int:
    """The worker job: follow events, stage changes and contact edits into segment membership, one transaction per
    read; returns how many rows were looked at."""
    total = 0
    for fn in (update_from_events, update_from_stage_changes):
        while True:
            with factory() as session:
                n = fn(session)
                session.commit()
            total += n
            if n < LIMIT:
                break
    now = utcnow()
    since = _last_contact_look.get("at", now - CONTACT_OVERLAP) - CONTACT_OVERLAP
    with factory() as session:
        total += update_from_contact_edits(session, since, now)
        session.commit()
    _last_contact_look["at"] = now
    return total


def run_time_refresh(factory: sessionmaker[Session]) -> dict[int, int]:
    """Refresh time-relative segments (and the segments using them), one transaction per workspace; then fold the
    member-count deltas that membership changes appended (``service.fold_counts``), one transaction per workspace.

    Returns workspace id → number of membership changes.
    """
    with factory() as session:
        rows = session.execute(select(Segment.workspace_id, Segment.dependencies).where(Segment.kind == "dynamic"))
        workspaces = sorted({int(ws) for ws, deps in rows if "time" in (deps or [])})
        pending = sorted(
            {
                int(ws)
                for ws in session.scalars(
                    select(Segment.workspace_id).where(Segment.id.in_(select(SegmentCountDelta.segment_id))).distinct()
                )
            }
        )
    out: dict[int, int] = {}
    for ws in workspaces:
        with factory() as session:
            result = service.refresh_time_relative(session, ws, utcnow())
            session.commit()
        out[ws] = sum(map(len, result.entered.values())) + sum(map(len, result.exited.values()))
    for ws in pending:
        with factory() as session:
            service.fold_counts(session, ws)
            session.commit()
    return out
