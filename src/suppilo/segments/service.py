"""Counting and listing the contacts of a workspace that match a filter."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, case, delete, func, insert, select, text, tuple_, update
from sqlalchemy.orm import Session

from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import PropertyDefinition
from suppilo.db.base import utcnow
from suppilo.engine.filter_eval import evaluate
from suppilo.engine.filters import (
    Filter,
    FilterError,
    PropertyDef,
    PropertyType,
    check_segment_refs,
    dependencies,
    parse_filter,
    to_json,
)
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.events import repository as events_repository
from suppilo.segments.compiler import SegmentSelect, compile_filter, contacts
from suppilo.segments.models import Segment, SegmentCountDelta, SegmentMembership, SegmentMembershipChange
from suppilo.segments.schemas import SegmentCreate, SegmentUpdate
from suppilo.segments.snapshot import Read, SnapshotPlan, run_reads, snapshot_plan


def members_from_sets(memberships: Mapping[int, Collection[int]]) -> SegmentSelect:
    """A segment membership lookup over known contact id sets (a segment not in the mapping is empty)."""

    def select_members(segment_id: int) -> Select[Any]:
        ids = sorted(memberships.get(segment_id, ()))
        return select(contacts.c.id).where(contacts.c.id.in_(ids))

    return select_members


def matching_clause(
    session: Session,
    workspace_id: int,
    filter: Filter,
    now: datetime,
    segment_select: SegmentSelect | None = None,
) -> ColumnElement[bool]:
    """The WHERE clause selecting the workspace's contacts that match ``filter`` at ``now``."""
    dialect = session.get_bind().dialect.name
    expr = compile_filter(filter, workspace_id=workspace_id, now=now, dialect=dialect, segment_select=segment_select)
    return (contacts.c.workspace_id == workspace_id) & expr


def count_matching(
    session: Session,
    workspace_id: int,
    filter: Filter,
    now: datetime,
    segment_select: SegmentSelect | None = None,
) -> int:
    """How many contacts of the workspace match ``filter`` at ``now``."""
    where = matching_clause(session, workspace_id, filter, now, segment_select)
    with _no_jit(session):
        return int(session.scalar(select(func.count()).select_from(contacts).where(where)) or 0)


def matching_ids(
    session: Session,
    workspace_id: int,
    filter: Filter,
    now: datetime,
    limit: int | None = None,
    segment_select: SegmentSelect | None = None,
) -> list[int]:
    """The ids (ascending) of the workspace's contacts that match ``filter`` at ``now``, at most ``limit``."""
    where = matching_clause(session, workspace_id, filter, now, segment_select)
    stmt = select(contacts.c.id).where(where).order_by(contacts.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    with _no_jit(session):
        return [int(i) for i in session.scalars(stmt)]


@contextmanager
def _no_jit(session: Session) -> Iterator[None]:
    """PostgreSQL: the statement runs without JIT compilation, then the transaction's setting is back as it was.

    A segment over a million contacts plans as costly (a correlated count per remaining contact), so the server
    JIT-compiles it, which took 0.9 s of a 3.4 s evaluation at 1M contacts / 10M events on the loaded 2-core
    machine; the query itself is index lookups, where compiled expressions gain nothing.
    """
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    before = session.execute(text("SELECT current_setting('jit'), set_config('jit', 'off', true)")).scalar_one()
    yield
    # (after an error the transaction is rolled back, and the setting with it)
    session.execute(text("SELECT set_config('jit', :v, true)"), {"v": before})


# The name the segment API uses for the same listing.
list_matching = matching_ids


# --- stored segments ---------------------------------------------------------------------------------------------

CHUNK = 500
EVENT_ENTERED = "segment.entered"
EVENT_EXITED = "segment.exited"


@dataclass
class DiffResult:
    """Who entered and who exited segments in one evaluation (segment id → contact ids)."""

    evaluated: list[int] = field(default_factory=list)
    entered: dict[int, list[int]] = field(default_factory=dict)
    exited: dict[int, list[int]] = field(default_factory=dict)


def _property_defs(session: Session, workspace_id: int) -> tuple[dict[str, PropertyDef], dict[str, PropertyDef]]:
    contact_defs: dict[str, PropertyDef] = {}
    company_defs: dict[str, PropertyDef] = {}
    rows = session.execute(
        select(
            PropertyDefinition.object_type, PropertyDefinition.name, PropertyDefinition.type, PropertyDefinition.options
        ).where(PropertyDefinition.workspace_id == workspace_id)
    )
    for object_type, name, type_, options in rows:
        target = contact_defs if object_type == "contact" else company_defs
        target[name] = PropertyDef(cast(PropertyType, type_), tuple(options or ()))
    return contact_defs, company_defs


def _parse(
    session: Session,
    workspace_id: int,
    raw: object,
    path: str = "filter",
    defs: tuple[dict[str, PropertyDef], dict[str, PropertyDef]] | None = None,
) -> Filter:
    contact_defs, company_defs = defs if defs is not None else _property_defs(session, workspace_id)
    try:
        return parse_filter(raw, contact_properties=contact_defs, company_properties=company_defs)
    except FilterError as exc:
        raise DomainError(f"{path}.{exc.path}" if exc.path else path, exc.reason, code="invalid_filter") from None


DefsKey = tuple[tuple[tuple[str, PropertyDef], ...], tuple[tuple[str, PropertyDef], ...]]


@lru_cache(maxsize=4096)
def _parse_cached(filter_json: str, defs_key: DefsKey) -> tuple[Filter, frozenset[str]]:
    """A stored (already validated) filter parsed once per process for the same JSON text and property definitions,
    with its dependencies."""
    node = parse_filter(
        json.loads(filter_json), contact_properties=dict(defs_key[0]), company_properties=dict(defs_key[1])
    )
    return node, frozenset(dependencies(node))


@lru_cache(maxsize=4096)
def _deps_cached(deps_json: str | None) -> tuple[str, ...]:
    return tuple(json.loads(deps_json) or ()) if deps_json else ()


def _raw(session: Session, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """A small read on the DBAPI cursor (no statement building or result processing: the per-event path)."""
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        sql = sql.replace("?", "%s")
    cur = session.connection().connection.cursor()
    cur.execute(sql, params)
    return list(cur.fetchall())


def _segments_read(pg: bool, workspace_id: int) -> tuple[str, tuple[Any, ...]]:
    flt, deps = ("filter::text", "dependencies::text") if pg else ("filter", "dependencies")
    return (
        f"SELECT id, name, {flt}, {deps} FROM segments WHERE workspace_id = ? AND kind = 'dynamic'",
        (workspace_id,),
    )


def _segment_rows(rows: Iterable[Any]) -> list[tuple[int, str, str | None, str | None]]:
    return [(int(r[0]), str(r[1]), r[2], r[3]) for r in rows]


def _dynamic_rows(session: Session, workspace_id: int) -> list[tuple[int, str, str | None, str | None]]:
    """(id, name, filter JSON text, dependencies JSON text) of the workspace's dynamic segments."""
    pg = session.get_bind().dialect.name == "postgresql"
    return _segment_rows(_raw(session, *_segments_read(pg, workspace_id)))


def _lock_defs_read(workspace_id: int) -> tuple[str, tuple[Any, ...]]:
    """PostgreSQL: ``serialize``'s lock and the property definitions in one statement (the lock's one-row
    subquery LEFT JOINed to the definitions)."""
    return (
        "SELECT pd.object_type, pd.name, pd.type, pd.options::text FROM (SELECT pg_advisory_xact_lock(?, ?)) AS l "
        "LEFT JOIN property_definitions pd ON pd.workspace_id = ?",
        (SEGMENTS_LOCK, workspace_id, workspace_id),
    )


def _defs_from(rows: Iterable[Any]) -> DefsKey:
    contact_defs: dict[str, PropertyDef] = {}
    company_defs: dict[str, PropertyDef] = {}
    for object_type, name, type_, options in rows:
        if object_type is None:
            continue
        target = contact_defs if object_type == "contact" else company_defs
        target[name] = PropertyDef(cast(PropertyType, type_), tuple(_deps_cached(options)))
    return tuple(sorted(contact_defs.items())), tuple(sorted(company_defs.items()))


def _defs_key(session: Session, workspace_id: int, *, serialize_first: bool = False) -> DefsKey:
    """The workspace's property definitions; with ``serialize_first``, after taking ``serialize``'s lock (on
    PostgreSQL in the same statement)."""
    pg = session.get_bind().dialect.name == "postgresql"
    if pg and serialize_first:
        return _defs_from(_raw(session, *_lock_defs_read(workspace_id)))
    if serialize_first:
        serialize(session, workspace_id)
    sql = (
        f"SELECT object_type, name, type, {'options::text' if pg else 'options'} FROM property_definitions "
        "WHERE workspace_id = ?"
    )
    return _defs_from(_raw(session, sql, (workspace_id,)))


def _membership_reads(pg: bool, workspace_id: int, ids: list[int]) -> list[Read]:
    """The stored memberships of these contacts (segment id, contact id), in every segment."""
    if pg:
        sql = "SELECT segment_id, contact_id FROM segment_memberships WHERE workspace_id = ? AND contact_id = ANY(?)"
        return [(sql, (workspace_id, ids))]
    return [
        (
            "SELECT segment_id, contact_id FROM segment_memberships WHERE workspace_id = ? "
            f"AND contact_id IN ({', '.join('?' for _ in chunk)})",
            (workspace_id, *chunk),
        )
        for chunk in _chunks(ids)
    ]


def _validate(session: Session, workspace_id: int, raw: object, segment_id: int | None, path: str = "filter") -> Filter:
    node = _parse(session, workspace_id, raw, path)

    def get_filter(sid: int) -> Filter | None:
        seg = session.scalar(select(Segment).where(Segment.workspace_id == workspace_id, Segment.id == sid))
        if seg is None:
            raise KeyError(sid)
        if seg.kind != "dynamic" or seg.filter is None:
            return None
        return _parse(session, workspace_id, seg.filter)

    try:
        check_segment_refs(node, segment_id, get_filter)
    except FilterError as exc:
        raise DomainError(f"{path}.{exc.path}", exc.reason, code="invalid_filter") from None
    return node


def get_segment(session: Session, workspace_id: int, segment_id: int) -> Segment:
    """One segment of the workspace (NotFound for another workspace's id)."""
    seg = session.scalar(select(Segment).where(Segment.workspace_id == workspace_id, Segment.id == segment_id))
    if seg is None:
        raise NotFound("segment_id", f"segment {segment_id} not found")
    return seg


def list_segments(session: Session, workspace_id: int) -> list[Segment]:
    """The workspace's segments in id order."""
    return list(session.scalars(select(Segment).where(Segment.workspace_id == workspace_id).order_by(Segment.id)))


def _audit(session: Session, workspace_id: int, actor: str, action: str, seg: Segment, **details: Any) -> None:
    from suppilo.workspaces import service as workspaces_service

    workspaces_service.record_audit(
        session, workspace_id, actor=actor, action=action, subject_type="segment", subject_id=seg.id,
        details={"name": seg.name, "kind": seg.kind, **details},
    )  # fmt: skip


def create_segment(
    session: Session, workspace_id: int, data: SegmentCreate, now: datetime | None = None, *, actor: str = "system"
) -> Segment:
    """Create a segment; a dynamic one is validated and evaluated at once. The audit log records who did it."""
    now = now or utcnow()
    if data.kind == "dynamic":
        if data.filter is None:
            raise DomainError("filter", "a dynamic segment needs a filter", code="invalid_filter")
        node = _validate(session, workspace_id, data.filter, None)
        flt: dict[str, Any] | None = to_json(node)
        deps = sorted(dependencies(node))
    else:
        if data.filter is not None:
            raise DomainError("filter", "a static list has no filter; add members instead")
        flt, deps = None, []
    seg = Segment(
        workspace_id=workspace_id,
        name=data.name,
        description=data.description,
        kind=data.kind,
        filter=flt,
        dependencies=deps,
        folded_count=0,
    )
    session.add(seg)
    session.flush()
    _audit(session, workspace_id, actor, "segment.created", seg, filter=flt)
    if seg.kind == "dynamic":
        refresh_segment(session, workspace_id, seg.id, now, reason="created")
    return seg


def update_segment(
    session: Session,
    workspace_id: int,
    segment_id: int,
    data: SegmentUpdate,
    now: datetime | None = None,
    *,
    actor: str = "system",
) -> Segment:
    """Change a segment; a new filter is validated (cycles refused) and the segment and its users re-evaluated."""
    seg = get_segment(session, workspace_id, segment_id)
    before = {"name": seg.name, "filter": seg.filter}
    if data.name is not None:
        seg.name = data.name
    if data.description is not None:
        seg.description = data.description
    if data.filter is not None:
        if seg.kind != "dynamic":
            raise DomainError("filter", "a static list has no filter; add members instead")
        node = _validate(session, workspace_id, data.filter, seg.id)
        seg.filter = to_json(node)
        seg.dependencies = sorted(dependencies(node))
        session.flush()
        segs = _dynamic_segments(session, workspace_id)
        for sid in _order(segs, _closure(segs, {seg.id})):
            refresh_segment(session, workspace_id, sid, now or utcnow(), reason="filter_changed")
    _audit(session, workspace_id, actor, "segment.updated", seg, before=before, filter=seg.filter)
    session.flush()
    return seg


def delete_segment(session: Session, workspace_id: int, segment_id: int, *, actor: str = "system") -> None:
    """Remove a segment with its membership and history; refused while another segment uses it."""
    seg = get_segment(session, workspace_id, segment_id)
    users = [s.id for s in list_segments(session, workspace_id) if f"segment:{seg.id}" in (s.dependencies or [])]
    if users:
        raise Conflict("segment_id", f"segments {', '.join(map(str, users))} use this segment", code="in_use")
    for table in (SegmentMembership, SegmentMembershipChange):
        session.execute(delete(table).where(table.workspace_id == workspace_id, table.segment_id == seg.id))
    _audit(session, workspace_id, actor, "segment.deleted", seg, filter=seg.filter)
    session.delete(seg)
    session.flush()


def segment_select(workspace_id: int) -> SegmentSelect:
    """The stored membership of the workspace's segments, for ``in_segment`` conditions in the compiler."""

    def select_members(sid: int) -> Select[Any]:
        return select(SegmentMembership.contact_id).where(
            SegmentMembership.workspace_id == workspace_id, SegmentMembership.segment_id == sid
        )

    return select_members


def preview_count(session: Session, workspace_id: int, raw: object, now: datetime | None = None) -> int:
    """How many contacts match a filter being edited (nothing is stored)."""
    node = _validate(session, workspace_id, raw, None)
    return count_matching(session, workspace_id, node, now or utcnow(), segment_select(workspace_id))


def _dynamic_segments(session: Session, workspace_id: int) -> dict[int, list[str]]:
    rows = session.execute(
        select(Segment.id, Segment.dependencies).where(Segment.workspace_id == workspace_id, Segment.kind == "dynamic")
    )
    return {int(sid): list(deps or []) for sid, deps in rows}


def _uses(deps: list[str]) -> set[int]:
    return {int(d.split(":", 1)[1]) for d in deps if d.startswith("segment:")}


def _closure(segs: dict[int, list[str]], seeds: set[int]) -> set[int]:
    """``seeds`` and every dynamic segment that uses one of them, directly or not."""
    out = set(seeds)
    grew = True
    while grew:
        grew = False
        for sid, deps in segs.items():
            if sid not in out and _uses(deps) & out:
                out.add(sid)
                grew = True
    return out


def _order(segs: dict[int, list[str]], wanted: set[int]) -> list[int]:
    """``wanted`` dynamic segments so that a segment comes after the segments it uses (ties by id)."""
    pending = {sid for sid in wanted if sid in segs}
    done: list[int] = []
    placed: set[int] = set()
    while pending:
        ready = sorted(sid for sid in pending if not (_uses(segs[sid]) & pending))
        if not ready:  # a cycle cannot be saved; stay total anyway
            ready = sorted(pending)
        for sid in ready:
            done.append(sid)
            placed.add(sid)
            pending.discard(sid)
    return done


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def _apply_diff(
    session: Session,
    workspace_id: int,
    seg: Segment,
    entered: list[int],
    exited: list[int],
    now: datetime,
    reason: str,
) -> None:
    """Store who entered and exited one segment (see ``_apply_diffs``)."""
    _apply_diffs(session, workspace_id, [(seg.id, seg.name, entered, exited)], now, reason)


def _apply_diffs(
    session: Session,
    workspace_id: int,
    diffs: list[tuple[int, str, list[int], list[int]]],
    now: datetime,
    reason: str,
) -> None:
    """Store who entered and exited: memberships, history rows, segment.entered / segment.exited events and counts.

    Bulk Core statements for all the segments at once. A count moves by a row appended to ``segment_count_deltas``
    (no segment row is rewritten per event); ``fold_counts`` folds them into the segments later.
    """
    diffs = [(sid, name, sorted(en), sorted(ex)) for sid, name, en, ex in diffs if en or ex]
    if not diffs:
        return
    session.flush()
    event_rows = _change_events(workspace_id, diffs, now, reason)
    if (
        session.get_bind().dialect.name == "postgresql"
        and sum(len(en) + len(ex) for _, _, en, ex in diffs) <= SMALL_DIFF
    ):
        _apply_small_pg(session, workspace_id, diffs, now, reason, event_rows)
    elif sum(len(en) + len(ex) for _, _, en, ex in diffs) <= SMALL_DIFF:
        _apply_small(session, workspace_id, diffs, now, reason, event_rows)
    else:
        _apply_large(session, workspace_id, diffs, now, reason)
        _insert_events(session, event_rows)
    _forget_counts(session, diffs)


# Up to this many membership changes (one event's worth) are written with a few driver-level statements.
SMALL_DIFF = 200


def _apply_small(
    session: Session,
    workspace_id: int,
    diffs: list[tuple[int, str, list[int], list[int]]],
    now: datetime,
    reason: str,
    event_rows: list[dict[str, Any]],
) -> None:
    """SQLite: memberships, history rows and count deltas of a small diff in at most four statements on the DBAPI
    cursor, then the segment.entered / segment.exited events."""
    at = now.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    cur = session.connection().connection.cursor()
    entered = [(sid, cid) for sid, _, en, _ in diffs for cid in en]
    exited = [(sid, cid) for sid, _, _, ex in diffs for cid in ex]
    if entered:
        cur.execute(
            "INSERT INTO segment_memberships (segment_id, contact_id, workspace_id, entered_at) VALUES "
            + ", ".join("(?, ?, ?, ?)" for _ in entered),
            [v for sid, cid in entered for v in (sid, cid, workspace_id, at)],
        )
    if exited:
        cur.execute(
            "DELETE FROM segment_memberships WHERE workspace_id = ? AND ("
            + " OR ".join("(segment_id = ? AND contact_id = ?)" for _ in exited)
            + ")",
            [workspace_id, *(v for pair in exited for v in pair)],
        )
    changes = [(sid, cid, "entered") for sid, cid in entered] + [(sid, cid, "exited") for sid, cid in exited]
    cur.execute(
        "INSERT INTO segment_membership_changes (workspace_id, segment_id, contact_id, change, at, reason) VALUES "
        + ", ".join("(?, ?, ?, ?, ?, ?)" for _ in changes),
        [v for sid, cid, change in changes for v in (workspace_id, sid, cid, change, at, reason[:64])],
    )
    moved = [(sid, len(en) - len(ex)) for sid, _, en, ex in diffs if len(en) != len(ex)]
    if moved:
        cur.execute(
            "INSERT INTO segment_count_deltas (segment_id, delta) VALUES " + ", ".join("(?, ?)" for _ in moved),
            [v for pair in moved for v in pair],
        )
    _insert_events(session, event_rows)


# PostgreSQL: a small diff's writes as data-modifying CTEs of one statement over array parameters: one round trip,
# and one statement text whatever the diff (so the driver prepares it once and the server plans it once). The parts
# touch disjoint rows (new memberships, left memberships, history, count deltas, new events), so running them on one
# snapshot changes nothing. History rows keep the order entered-then-exited (unnest keeps the arrays' order).
_SMALL_PG = """
WITH new_members AS (
    INSERT INTO segment_memberships (segment_id, contact_id, workspace_id, entered_at)
    SELECT s, c, %(ws)s, %(at)s FROM unnest(%(in_s)s::bigint[], %(in_c)s::bigint[]) AS t(s, c)
), left_members AS (
    DELETE FROM segment_memberships m USING unnest(%(out_s)s::bigint[], %(out_c)s::bigint[]) AS t(s, c)
    WHERE m.workspace_id = %(ws)s AND m.segment_id = t.s AND m.contact_id = t.c
), history AS (
    INSERT INTO segment_membership_changes (workspace_id, segment_id, contact_id, change, at, reason)
    SELECT %(ws)s, s, c, ch, %(at)s, %(reason)s
    FROM unnest(%(ch_s)s::bigint[], %(ch_c)s::bigint[], %(ch)s::text[]) WITH ORDINALITY AS t(s, c, ch, n) ORDER BY n
), counts AS (
    INSERT INTO segment_count_deltas (segment_id, delta)
    SELECT s, d FROM unnest(%(moved_s)s::bigint[], %(moved_d)s::bigint[]) AS t(s, d)
), timeline AS (
    INSERT INTO events (workspace_id, contact_id, anonymous_id, kind, name, properties, context, occurred_at,
                        received_at, message_id)
    SELECT %(ws)s, c, NULL, 'track', n, p, %(context)s::jsonb, %(at)s, %(wall)s, m
    FROM unnest(%(ev_c)s::bigint[], %(ev_n)s::text[], %(ev_p)s::jsonb[], %(ev_m)s::text[]) WITH ORDINALITY
        AS t(c, n, p, m, k)
    ORDER BY k
    ON CONFLICT (workspace_id, message_id) DO NOTHING
)
SELECT 1
"""


def _apply_small_pg(
    session: Session,
    workspace_id: int,
    diffs: list[tuple[int, str, list[int], list[int]]],
    now: datetime,
    reason: str,
    event_rows: list[dict[str, Any]],
) -> None:
    """PostgreSQL: memberships, history rows, counts and the segment.entered / segment.exited events of a small
    diff in one statement (``_SMALL_PG``)."""
    entered = [(sid, cid) for sid, _, en, _ in diffs for cid in en]
    exited = [(sid, cid) for sid, _, _, ex in diffs for cid in ex]
    changes = [(sid, cid, "entered") for sid, cid in entered] + [(sid, cid, "exited") for sid, cid in exited]
    moved = [(sid, len(en) - len(ex)) for sid, _, en, ex in diffs if len(en) != len(ex)]
    params = {
        "ws": workspace_id,
        "at": now,
        "wall": event_rows[0]["received_at"],
        "reason": reason[:64],
        "in_s": [s for s, _ in entered],
        "in_c": [c for _, c in entered],
        "out_s": [s for s, _ in exited],
        "out_c": [c for _, c in exited],
        "ch_s": [s for s, _, _ in changes],
        "ch_c": [c for _, c, _ in changes],
        "ch": [ch for _, _, ch in changes],
        "moved_s": [s for s, _ in moved],
        "moved_d": [d for _, d in moved],
        "context": json.dumps(event_rows[0]["context"]),  # (the same for all: ``_change_events``)
        "ev_c": [r["contact_id"] for r in event_rows],
        "ev_n": [r["name"] for r in event_rows],
        "ev_p": [json.dumps(r["properties"]) for r in event_rows],
        "ev_m": [r["message_id"] for r in event_rows],
    }
    session.connection().connection.cursor().execute(_SMALL_PG, params)


def _apply_large(
    session: Session, workspace_id: int, diffs: list[tuple[int, str, list[int], list[int]]], now: datetime, reason: str
) -> None:
    """Memberships, history rows and count deltas of a large diff with bulk Core statements."""
    members_t = cast(Table, SegmentMembership.__table__)
    changes_t = cast(Table, SegmentMembershipChange.__table__)
    new_rows = [
        {"segment_id": sid, "contact_id": cid, "workspace_id": workspace_id, "entered_at": now}
        for sid, _, entered, _ in diffs
        for cid in entered
    ]
    if new_rows:
        session.execute(insert(members_t), new_rows)
    gone = [(sid, cid) for sid, _, _, exited in diffs for cid in exited]
    for i in range(0, len(gone), CHUNK):
        session.execute(
            delete(members_t).where(
                members_t.c.workspace_id == workspace_id,
                tuple_(members_t.c.segment_id, members_t.c.contact_id).in_(gone[i : i + CHUNK]),
            )
        )
    changes = [
        (sid, name, cid, change)
        for sid, name, entered, exited in diffs
        for cid, change in [*((c, "entered") for c in entered), *((c, "exited") for c in exited)]
    ]
    session.execute(
        insert(changes_t),
        [
            {
                "workspace_id": workspace_id,
                "segment_id": sid,
                "contact_id": cid,
                "change": change,
                "at": now,
                "reason": reason[:64],
            }
            for sid, _, cid, change in changes
        ],
    )
    moved = [
        {"segment_id": sid, "delta": len(entered) - len(exited)}
        for sid, _, entered, exited in diffs
        if len(entered) != len(exited)
    ]
    if moved:
        session.execute(insert(cast(Table, SegmentCountDelta.__table__)), moved)


def _change_events(
    workspace_id: int, diffs: list[tuple[int, str, list[int], list[int]]], now: datetime, reason: str
) -> list[dict[str, Any]]:
    """The segment.entered / segment.exited events of a diff (keyed, so a repeated diff stores them once)."""
    changes = [
        (sid, name, cid, change)
        for sid, name, entered, exited in diffs
        for cid, change in [*((c, "entered") for c in entered), *((c, "exited") for c in exited)]
    ]
    stamp = now.isoformat()
    received = utcnow()
    return [
        {
            "workspace_id": workspace_id,
            "contact_id": cid,
            "anonymous_id": None,
            "kind": "track",
            "name": EVENT_ENTERED if change == "entered" else EVENT_EXITED,
            "properties": {"segment_id": sid, "segment_name": name, "reason": reason},
            "context": {"source": "system"},
            "occurred_at": now,
            "received_at": received,
            "message_id": f"segment:{sid}:{cid}:{change}:{stamp}",
        }
        for sid, name, cid, change in changes
    ]


def _insert_events(session: Session, event_rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(event_rows), 1000):  # one statement per 1,000 (duplicates by message id skipped)
        events_repository.insert_events(session.connection(), event_rows[i : i + 1000])


def _forget_counts(session: Session, diffs: list[tuple[int, str, list[int], list[int]]]) -> None:
    """Loaded segments whose count moved (a delta row) forget it; read again, it includes the new delta."""
    for sid, _, entered, exited in diffs:
        if len(entered) == len(exited):
            continue
        loaded = session.identity_map.get(Session.identity_key(Segment, sid))
        if loaded is not None:
            session.expire(loaded, ["member_count"])


def refresh_segment(
    session: Session, workspace_id: int, segment_id: int, now: datetime, *, reason: str = "refresh"
) -> DiffResult:
    """Evaluate a dynamic segment in full (compiled SQL) and store the difference to its stored membership."""
    serialize(session, workspace_id)
    seg = get_segment(session, workspace_id, segment_id)
    result = DiffResult()
    if seg.kind != "dynamic" or seg.filter is None:
        return result
    node = _parse(session, workspace_id, seg.filter)
    matching = set(matching_ids(session, workspace_id, node, now, segment_select=segment_select(workspace_id)))
    stored = set(
        session.scalars(
            select(SegmentMembership.contact_id).where(
                SegmentMembership.workspace_id == workspace_id, SegmentMembership.segment_id == seg.id
            )
        )
    )
    entered, exited = sorted(matching - stored), sorted(stored - matching)
    _apply_diff(session, workspace_id, seg, entered, exited, now, reason)
    _set_count(session, seg, len(matching))
    seg.last_evaluated_at = now
    session.flush()
    result.evaluated.append(seg.id)
    result.entered[seg.id] = entered
    result.exited[seg.id] = exited
    return result


def refresh_all(
    session: Session, workspace_id: int, now: datetime, *, only: set[int] | None = None, reason: str = "refresh"
) -> DiffResult:
    """Evaluate the workspace's dynamic segments (or ``only`` those and the segments using them) in dependency order."""
    segs = _dynamic_segments(session, workspace_id)
    wanted = set(segs) if only is None else _closure(segs, only)
    total = DiffResult()
    for sid in _order(segs, wanted):
        r = refresh_segment(session, workspace_id, sid, now, reason=reason)
        total.evaluated.extend(r.evaluated)
        total.entered.update(r.entered)
        total.exited.update(r.exited)
    return total


SEGMENTS_LOCK = 73_010


def _set_count(session: Session, seg: Segment, count: int) -> None:
    """A fully evaluated segment's count is its membership: stored as folded, its deltas dropped (under
    ``serialize``'s lock, so no other transaction is adding deltas for it)."""
    session.execute(delete(SegmentCountDelta).where(SegmentCountDelta.segment_id == seg.id))
    seg.folded_count = count
    session.flush()
    session.expire(seg, ["member_count"])


def fold_counts(session: Session, workspace_id: int) -> int:
    """Fold the workspace's count deltas into its segments' stored counts and delete them; returns how many delta
    rows were folded. Readers see the same count before and after (``Segment.member_count`` sums both parts)."""
    serialize(session, workspace_id)
    ids = select(Segment.id).where(Segment.workspace_id == workspace_id).scalar_subquery()
    sums = session.execute(
        select(SegmentCountDelta.segment_id, func.sum(SegmentCountDelta.delta), func.count())
        .where(SegmentCountDelta.segment_id.in_(ids))
        .group_by(SegmentCountDelta.segment_id)
    ).all()
    if not sums:
        return 0
    segments_t = cast(Table, Segment.__table__)
    moved = {int(sid): int(total) for sid, total, _ in sums if total}
    if moved:
        session.execute(
            update(segments_t)
            .where(segments_t.c.workspace_id == workspace_id, segments_t.c.id.in_(sorted(moved)))
            .values(
                member_count=segments_t.c.member_count + case(moved, value=segments_t.c.id, else_=0),
                updated_at=segments_t.c.updated_at,  # a fold changes no segment (and skips the column's onupdate)
            )
        )
    session.execute(delete(SegmentCountDelta).where(SegmentCountDelta.segment_id.in_([int(r[0]) for r in sums])))
    for sid in moved:
        loaded = session.identity_map.get(Session.identity_key(Segment, sid))
        if loaded is not None:
            session.expire(loaded, ["folded_count", "member_count"])
    return sum(int(n) for _, _, n in sums)


def serialize(session: Session, workspace_id: int) -> None:
    """Membership changes of one workspace take turns (PostgreSQL: a transaction-scoped advisory lock; SQLite's
    writers take turns anyway): two refreshes at once would both see a contact as new and both store it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": SEGMENTS_LOCK, "b": workspace_id})


def _affected(deps: list[str], changed: set[str]) -> bool:
    return any(dep in changed or dep.split(":", 1)[0] in changed for dep in deps)


@lru_cache(maxsize=1024)
def _affected_order(graph: tuple[tuple[int, str | None], ...], changed: frozenset[str]) -> tuple[int, ...]:
    """The segments (id, dependencies JSON) affected by ``changed``, with the segments using them, in dependency
    order; kept per distinct graph and change (the same for every event of a kind until segments change)."""
    segs = {sid: list(_deps_cached(deps)) for sid, deps in graph}
    seeds = {sid for sid, deps in segs.items() if _affected(deps, set(changed))}
    return tuple(_order(segs, _closure(segs, seeds))) if seeds else ()


# what a dependency needs loaded into the contacts' snapshots (the contact's own row is always loaded)
_SNAPSHOT_PARTS = {
    "company": "company",
    "tags": "tags",
    "stages": "stages",
    "orders": "orders",
    "consent": "consents",
}


# Per (workspace, change): the event names and snapshot parts the last update of that kind read. On PostgreSQL the
# next one reads them together with the segment list, the lock and the memberships in one round trip; a guess that
# falls short costs one more round trip and never changes a result.
_LAST_READS: dict[tuple[int, frozenset[str]], tuple[frozenset[str], frozenset[str]]] = {}


def update_for_contacts(
    session: Session,
    workspace_id: int,
    contact_ids: Iterable[int],
    changed: set[str],
    now: datetime,
    *,
    reason: str = "update",
) -> DiffResult:
    """Re-evaluate, for these contacts only, the dynamic segments whose dependencies meet ``changed``.

    ``changed`` names what changed like the filter dependencies do: ``contact``, ``company``, ``tags``,
    ``stages``, ``orders``, ``events:<name>`` (or ``events`` for any), ``segment:<id>``. Segments using an
    affected segment follow, in dependency order. Evaluation is in memory over snapshots of the contacts holding
    only what those segments read; stored filters are parsed once per process (by their JSON text and the property
    definitions), and the membership changes are written in a fixed number of statements. On PostgreSQL the reads
    take one round trip (two the first time a kind of change is seen in the process) and a small diff's writes one.
    """
    ids = sorted(set(contact_ids))
    result = DiffResult()
    if not ids:
        return result
    pg = session.get_bind().dialect.name == "postgresql"
    key = (workspace_id, frozenset(changed))
    guess = _LAST_READS.get(key) if pg else None
    member_reads = _membership_reads(pg, workspace_id, ids)
    results: list[list[Any]] = []
    plan: SnapshotPlan | None = None
    if guess is not None:
        # PostgreSQL, this kind of change seen before: the segment list, the lock with the property definitions,
        # the memberships and the snapshot parts the last such update read, in one round trip (each statement
        # runs after the lock on its own snapshot, so they see every change committed before it)
        plan = snapshot_plan("postgresql", workspace_id, ids, event_names=guess[0], parts=guess[1])
        results = run_reads(
            session, [_segments_read(pg, workspace_id), _lock_defs_read(workspace_id), *member_reads, *plan.reads]
        )
        rows = _segment_rows(results[0])
    else:
        rows = _dynamic_rows(session, workspace_id)
    info = {sid: (name, flt) for sid, name, flt, _ in rows}
    order = _affected_order(tuple((sid, deps) for sid, _, _, deps in rows), frozenset(changed))
    if not order:
        _LAST_READS.pop(key, None)
        return result
    defs_key = _defs_from(results[1]) if guess is not None else _defs_key(session, workspace_id, serialize_first=True)
    nodes: dict[int, Filter] = {}
    event_names: set[str] = set()
    parts: set[str] = set()
    for sid in order:
        raw = info[sid][1]
        if raw is None:
            continue
        node, deps = _parse_cached(raw, defs_key)
        nodes[sid] = node
        for dep in deps:
            if dep.startswith("events:"):
                event_names.add(dep.split(":", 1)[1])
                parts.add("events")
            elif dep.startswith("score:"):
                parts.add("scores")
            elif dep in _SNAPSHOT_PARTS:
                parts.add(_SNAPSHOT_PARTS[dep])
    if pg:
        if len(_LAST_READS) >= 4096:
            _LAST_READS.clear()
        _LAST_READS[key] = (frozenset(event_names), frozenset(parts))
    if guess is not None and plan is not None and event_names <= guess[0] and parts <= guess[1]:
        # (more loaded than these segments read changes nothing: the evaluator selects what each condition reads)
        member_rows = results[2 : 2 + len(member_reads)]
        snaps = plan.build(results[2 + len(member_reads) :])
    else:
        plan = snapshot_plan(session.get_bind().dialect.name, workspace_id, ids, event_names=event_names, parts=parts)
        more = run_reads(session, [*(member_reads if guess is None else []), *plan.reads])
        member_rows = results[2 : 2 + len(member_reads)] if guess is not None else more[: len(member_reads)]
        snaps = plan.build(more[len(more) - len(plan.reads) :])
    members: dict[int, set[int]] = defaultdict(set)
    for chunk_rows in member_rows:
        for sid, cid in chunk_rows:
            members[int(sid)].add(int(cid))
    diffs: list[tuple[int, str, list[int], list[int]]] = []
    for sid in order:
        node_or_none = nodes.get(sid)
        if node_or_none is None:
            continue
        node = node_or_none
        entered: list[int] = []
        exited: list[int] = []
        current = members[sid]
        for cid, snap in snaps.items():
            now_in = evaluate(node, snap, now, lambda ref, c=cid: c in members[ref])  # type: ignore[misc]
            was_in = cid in current
            if now_in and not was_in:
                entered.append(cid)
            elif was_in and not now_in:
                exited.append(cid)
        diffs.append((sid, info[sid][0], entered, exited))
        current.update(entered)
        current.difference_update(exited)
        result.evaluated.append(sid)
        result.entered[sid] = sorted(entered)
        result.exited[sid] = sorted(exited)
    _apply_diffs(session, workspace_id, diffs, now, reason)
    session.flush()
    return result


def refresh_time_relative(session: Session, workspace_id: int, now: datetime) -> DiffResult:
    """Re-evaluate the segments whose result can change with the clock alone (and the segments using them)."""
    segs = _dynamic_segments(session, workspace_id)
    seeds = {sid for sid, deps in segs.items() if "time" in deps}
    if not seeds:
        return DiffResult()
    return refresh_all(session, workspace_id, now, only=seeds, reason="time")


# --- static lists and reading membership -------------------------------------------------------------------------


def _static(session: Session, workspace_id: int, segment_id: int) -> Segment:
    seg = get_segment(session, workspace_id, segment_id)
    if seg.kind != "static":
        raise DomainError(
            "segment_id", "members of a dynamic segment follow its filter; use a static list", "not_static"
        )
    return seg


def _check_contacts(session: Session, workspace_id: int, contact_ids: list[int]) -> None:
    known: set[int] = set()
    for chunk in _chunks(sorted(set(contact_ids))):
        known.update(
            session.scalars(
                select(contacts.c.id).where(contacts.c.workspace_id == workspace_id, contacts.c.id.in_(chunk))
            )
        )
    for i, cid in enumerate(contact_ids):
        if cid not in known:
            raise NotFound(f"contact_ids[{i}]", f"contact {cid} not found")


def add_members(
    session: Session, workspace_id: int, segment_id: int, contact_ids: list[int], now: datetime | None = None
) -> int:
    """Add contacts to a static list; returns how many were not members yet."""
    now = now or utcnow()
    serialize(session, workspace_id)
    seg = _static(session, workspace_id, segment_id)
    _check_contacts(session, workspace_id, contact_ids)
    stored = _members_among(session, workspace_id, seg.id, contact_ids)
    new = sorted(set(contact_ids) - stored)
    _apply_diff(session, workspace_id, seg, new, [], now, "added")
    session.flush()
    update_for_contacts(session, workspace_id, new, {f"segment:{seg.id}"}, now, reason=f"segment:{seg.id}")
    return len(new)


def remove_members(
    session: Session, workspace_id: int, segment_id: int, contact_ids: list[int], now: datetime | None = None
) -> int:
    """Remove contacts from a static list; returns how many were members."""
    now = now or utcnow()
    serialize(session, workspace_id)
    seg = _static(session, workspace_id, segment_id)
    gone = sorted(_members_among(session, workspace_id, seg.id, contact_ids))
    _apply_diff(session, workspace_id, seg, [], gone, now, "removed")
    session.flush()
    update_for_contacts(session, workspace_id, gone, {f"segment:{seg.id}"}, now, reason=f"segment:{seg.id}")
    return len(gone)


def _members_among(session: Session, workspace_id: int, segment_id: int, contact_ids: list[int]) -> set[int]:
    out: set[int] = set()
    for chunk in _chunks(sorted(set(contact_ids))):
        out.update(
            session.scalars(
                select(SegmentMembership.contact_id).where(
                    SegmentMembership.workspace_id == workspace_id,
                    SegmentMembership.segment_id == segment_id,
                    SegmentMembership.contact_id.in_(chunk),
                )
            )
        )
    return out


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise DomainError("cursor", "not a cursor this API gave")
    return int(cursor)


def list_members(
    session: Session, workspace_id: int, segment_id: int, *, cursor: str | None = None, limit: int = 100
) -> tuple[list[SegmentMembership], str | None]:
    """Members by contact id, a page at a time."""
    seg = get_segment(session, workspace_id, segment_id)
    after = _cursor(cursor)
    stmt = select(SegmentMembership).where(
        SegmentMembership.workspace_id == workspace_id, SegmentMembership.segment_id == seg.id
    )
    if after is not None:
        stmt = stmt.where(SegmentMembership.contact_id > after)
    rows = list(session.scalars(stmt.order_by(SegmentMembership.contact_id).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], str(rows[limit - 1].contact_id)
    return rows, None


def history(
    session: Session,
    workspace_id: int,
    segment_id: int,
    *,
    contact_id: int | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[SegmentMembershipChange], str | None]:
    """Entered / exited changes of a segment, newest first."""
    seg = get_segment(session, workspace_id, segment_id)
    before = _cursor(cursor)
    stmt = select(SegmentMembershipChange).where(
        SegmentMembershipChange.workspace_id == workspace_id, SegmentMembershipChange.segment_id == seg.id
    )
    if contact_id is not None:
        stmt = stmt.where(SegmentMembershipChange.contact_id == contact_id)
    if before is not None:
        stmt = stmt.where(SegmentMembershipChange.id < before)
    rows = list(session.scalars(stmt.order_by(SegmentMembershipChange.id.desc()).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], str(rows[limit - 1].id)
    return rows, None


def contact_segments(session: Session, workspace_id: int, contact_id: int) -> list[tuple[Segment, datetime]]:
    """The segments a contact of the workspace is in, with when it entered each."""
    contacts_service.get_contact(session, workspace_id, contact_id)
    rows = session.execute(
        select(Segment, SegmentMembership.entered_at)
        .join(SegmentMembership, SegmentMembership.segment_id == Segment.id)
        .where(
            SegmentMembership.workspace_id == workspace_id,
            Segment.workspace_id == workspace_id,
            SegmentMembership.contact_id == contact_id,
        )
        .order_by(Segment.id)
    )
    return [(seg, at) for seg, at in rows]


def parse_stored_filter(session: Session, workspace_id: int, raw: object) -> Filter:
    """A filter validated when it was saved (a journey's branch or goal): parsed against the current property
    definitions, without walking its segment references again."""
    return _parse(session, workspace_id, raw)


def parse_filter_json(session: Session, workspace_id: int, raw: object, path: str = "filter") -> Filter:
    """Validate filter JSON for the workspace (properties, segment references); DomainError names the bad node."""
    return _validate(session, workspace_id, raw, None, path)
