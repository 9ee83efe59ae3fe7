"""Counting and listing the contacts of a workspace that match a filter."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from suppilo.engine.filters import Filter
from suppilo.segments.compiler import SegmentSelect, compile_filter, contacts


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
    return [int(i) for i in session.scalars(stmt)]


# The name the segment API uses for the same listing.
list_matching = matching_ids
