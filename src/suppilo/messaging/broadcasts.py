"""Broadcasts: a one-off send of a template to a list of contacts or a tag, at a moment or at a local time of day
in each contact's time zone (the workspace's zone for contacts without one).

Enqueuing runs in chunks (each its own transaction when run by ``run_due_broadcasts``) with dedupe keys
``broadcast:{id}:contact:{cid}``, so a crash part-way resumes without duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.contacts.models import Contact, ContactTag
from suppilo.db.base import utcnow
from suppilo.db.session import unit_of_work
from suppilo.errors import DomainError, NotFound
from suppilo.messaging import outbox
from suppilo.messaging.outbox_models import Broadcast
from suppilo.workspaces.models import Workspace

CHUNK = 1000
# The earliest zone is UTC+14: a local-time broadcast starts enqueuing this long before its date begins in UTC.
MAX_ZONE_AHEAD = timedelta(hours=14)


class BroadcastError(DomainError):
    """A refused broadcast operation."""


def local_send_time(local_day: date, at: time, zone_name: str | None, fallback_zone: str) -> datetime:
    """The UTC moment of ``at`` on ``local_day`` in a zone. A time skipped by a DST change (02:30 on the spring
    day) maps to the instant after the gap; a repeated one (autumn) to its first occurrence."""
    try:
        zone = ZoneInfo(zone_name) if zone_name else ZoneInfo(fallback_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(fallback_zone)
    # fold=0 (PEP 495): a wall time in a spring gap takes the offset from before the change, which lands just
    # after the gap (02:30 -> 03:30 summer time); a repeated autumn time is its first occurrence.
    return datetime.combine(local_day, at).replace(tzinfo=zone, fold=0).astimezone(UTC)


def create_broadcast(
    session: Session,
    workspace_id: int,
    *,
    name: str,
    template_key: str,
    kind: str = "marketing",
    topic: str = "marketing",
    contact_ids: list[int] | None = None,
    tag: str | None = None,
    segment_id: int | None = None,
    send_at: datetime | None = None,
    local_date: date | None = None,
    local_time: time | None = None,
) -> Broadcast:
    """A scheduled broadcast; audience is ``contact_ids``, ``tag`` or ``segment_id`` (its members when queued),
    timing ``send_at`` (UTC moment, default now) or ``local_date`` + ``local_time`` (each contact's zone)."""
    if sum(x is not None for x in (contact_ids, tag, segment_id)) != 1:
        raise BroadcastError("audience", "give one of contact_ids, tag or segment_id", code="invalid_audience")
    if segment_id is not None:
        from suppilo.segments import service as segments_service

        segments_service.get_segment(session, workspace_id, segment_id)
    if contact_ids is not None and not contact_ids:
        raise BroadcastError("contact_ids", "the contact list is empty", code="empty_audience")
    if (local_date is None) != (local_time is None):
        raise BroadcastError("local_time", "local_date and local_time go together", code="invalid_schedule")
    if send_at is not None and local_date is not None:
        raise BroadcastError("send_at", "give send_at or a local date and time, not both", code="invalid_schedule")
    if send_at is not None and send_at.tzinfo is None:
        raise BroadcastError("send_at", "send_at must carry a time zone", code="naive_datetime")
    if kind not in outbox.KINDS:
        raise BroadcastError("kind", "kind must be marketing or transactional", code="invalid_kind")
    if contact_ids is not None:
        ids = sorted(set(int(c) for c in contact_ids))
        found = set(
            session.scalars(select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.id.in_(ids)))
        )
        missing = [c for c in ids if c not in found]
        if missing:
            raise NotFound(f"contact_ids[{contact_ids.index(missing[0])}]", f"contact {missing[0]} not found")
        contact_ids = ids
    row = Broadcast(
        workspace_id=workspace_id,
        name=name[:200],
        template_key=template_key,
        kind=kind,
        topic=topic,
        contact_ids=contact_ids,
        tag=tag,
        segment_id=segment_id,
        send_at=send_at if (send_at or local_date) else utcnow(),
        local_date=local_date.isoformat() if local_date else None,
        local_time=local_time.strftime("%H:%M") if local_time else None,
        status="scheduled",
        enqueued=0,
        cursor=0,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def get_broadcast(session: Session, workspace_id: int, broadcast_id: int) -> Broadcast:
    """The broadcast with this id in this workspace."""
    row = session.scalar(select(Broadcast).where(Broadcast.workspace_id == workspace_id, Broadcast.id == broadcast_id))
    if row is None:
        raise NotFound("broadcast_id", f"broadcast {broadcast_id} not found")
    return row


def _starts_at(row: Broadcast) -> datetime:
    if row.local_date:
        return datetime.combine(date.fromisoformat(row.local_date), time(0, 0), tzinfo=UTC) - MAX_ZONE_AHEAD
    assert row.send_at is not None
    return row.send_at


def _audience(session: Session, row: Broadcast, limit: int) -> tuple[list[tuple[int, str | None]], int | None]:
    """The next recipients (id, zone) after the cursor, and the last id examined (None when done)."""
    if row.contact_ids is not None:
        ids = [c for c in row.contact_ids if c > row.cursor][:limit]
        if not ids:
            return [], None
        zones = dict(
            session.execute(
                select(Contact.id, Contact.timezone).where(
                    Contact.workspace_id == row.workspace_id, Contact.id.in_(ids)
                )
            ).all()
        )
        # Contacts deleted since scheduling are passed over.
        return [(cid, zones[cid]) for cid in ids if cid in zones], ids[-1]
    if row.segment_id is not None:
        from suppilo.segments.models import SegmentMembership

        seg_query = (
            select(SegmentMembership.contact_id, Contact.timezone)
            .join(Contact, Contact.id == SegmentMembership.contact_id)
            .where(
                SegmentMembership.workspace_id == row.workspace_id,
                SegmentMembership.segment_id == row.segment_id,
                SegmentMembership.contact_id > row.cursor,
            )
            .order_by(SegmentMembership.contact_id)
            .limit(limit)
        )
        members = [(cid, tz) for cid, tz in session.execute(seg_query)]
        return members, (members[-1][0] if members else None)
    query = (
        select(ContactTag.contact_id, Contact.timezone)
        .join(Contact, Contact.id == ContactTag.contact_id)
        .where(
            ContactTag.workspace_id == row.workspace_id,
            ContactTag.tag == row.tag,
            ContactTag.contact_id > row.cursor,
            Contact.workspace_id == row.workspace_id,
        )
        .order_by(ContactTag.contact_id)
        .limit(limit)
    )
    rows = [(cid, tz) for cid, tz in session.execute(query)]
    return rows, (rows[-1][0] if rows else None)


def enqueue_chunk(session: Session, row: Broadcast, *, now: datetime | None = None, chunk: int = CHUNK) -> int:
    """Queue the next ``chunk`` recipients of a due broadcast; returns how many were queued (0 when done)."""
    at = now or utcnow()
    if row.status not in ("scheduled", "enqueuing") or at < _starts_at(row):
        return 0
    audience, last_id = _audience(session, row, chunk)
    if last_id is None:
        row.status = "enqueued"
        session.flush()
        return 0
    zone = session.scalar(select(Workspace.timezone).where(Workspace.id == row.workspace_id)) or "UTC"
    items: list[dict[str, Any]] = []
    for cid, contact_zone in audience:
        not_before: datetime | None
        if row.local_date and row.local_time:
            hh, mm = (int(x) for x in row.local_time.split(":"))
            not_before = local_send_time(date.fromisoformat(row.local_date), time(hh, mm), contact_zone, zone)
        else:
            not_before = row.send_at
        items.append(
            {
                "dedupe_key": f"broadcast:{row.id}:contact:{cid}",
                "contact_id": cid,
                "template_key": row.template_key,
                "kind": row.kind,
                "topic": row.topic,
                "not_before": not_before,
                "broadcast_id": row.id,
            }
        )
    queued = outbox.enqueue_many(session, row.workspace_id, items)
    row.cursor = last_id
    row.enqueued += queued
    row.status = "enqueuing"
    session.flush()
    return queued


def enqueue_all(session: Session, workspace_id: int, broadcast_id: int, *, now: datetime | None = None) -> int:
    """Queue every remaining recipient of a due broadcast in this transaction; returns how many."""
    row = get_broadcast(session, workspace_id, broadcast_id)
    total = 0
    while row.status in ("scheduled", "enqueuing"):
        before = row.cursor
        total += enqueue_chunk(session, row, now=now)
        if row.cursor == before and row.status != "enqueued":
            break
    return total


def run_due_broadcasts(
    factory: sessionmaker[Session], *, now: datetime | None = None, clock: Callable[[], datetime] = utcnow
) -> int:
    """The worker job: queue due broadcasts chunk by chunk, one transaction per chunk; returns messages queued."""
    at = now or clock()
    with factory() as session:
        pending = list(
            session.execute(
                select(Broadcast.id, Broadcast.workspace_id).where(Broadcast.status.in_(("scheduled", "enqueuing")))
            )
        )
    total = 0
    for broadcast_id, workspace_id in pending:
        while True:
            with unit_of_work(factory) as session:
                row = get_broadcast(session, workspace_id, broadcast_id)
                before = (row.cursor, row.status)
                total += enqueue_chunk(session, row, now=at)
                after = (row.cursor, row.status)
            if after == before or after[1] == "enqueued":
                break
    return total
