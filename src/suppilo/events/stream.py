"""Reading an append-only table (the event log, the stage-change history) in id order, after commit, from a stored
cursor: the way background consumers (journeys, live segments) follow what happens.

On PostgreSQL a transaction that took a smaller id can commit after a larger one: an id skipped by a read is kept as
pending and looked up again on later reads until it appears or is older than ``PENDING_TTL`` seconds (ids of
rolled-back inserts never appear). Consumers make their effects keyed, so seeing a row twice changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from suppilo.db.base import Base, utcnow
from suppilo.db.types import JSONType, UTCDateTime

PENDING_TTL = 120.0
MAX_GAP = 100_000


class StreamCursor(Base):
    """How far a consumer has read a table, with the ids it skipped that may still appear."""

    __tablename__ = "stream_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    pending: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


def ensure_cursor(session: Session, name: str, table: Any) -> None:
    """Create the cursor at the table's end if it does not exist (a new consumer starts with what happens next)."""
    if session.get(StreamCursor, name) is not None:
        return
    ins = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(StreamCursor)
    start = int(session.scalar(select(func.max(table.c.id))) or 0)
    session.execute(ins.values(name=name, position=start, pending={}, updated_at=utcnow()).on_conflict_do_nothing())


def lock_cursor(session: Session, name: str, table: Any) -> StreamCursor:
    """The cursor row, locked on PostgreSQL so one consumer of a stream reads at a time."""
    ensure_cursor(session, name, table)
    row = session.get(StreamCursor, name, with_for_update=session.get_bind().dialect.name == "postgresql")
    assert row is not None
    return row


def read(
    session: Session,
    cursor: StreamCursor,
    table: Any,
    columns: Sequence[Any],
    limit: int,
    clock: Callable[[], float] = time.time,
) -> list[Any]:
    """Rows (id first, then ``columns``) after the cursor, plus pending ids that appeared; moves the cursor (the
    caller commits, so a crash before the commit reads the same rows again)."""
    id_col = table.c.id
    rows = list(session.execute(select(id_col, *columns).where(id_col > cursor.position).order_by(id_col).limit(limit)))
    pending: dict[str, float] = {k: float(v) for k, v in (cursor.pending or {}).items()}
    now = clock()
    found: list[Any] = []
    if pending:
        ids = [int(k) for k in pending]
        for start in range(0, len(ids), 1000):
            found.extend(session.execute(select(id_col, *columns).where(id_col.in_(ids[start : start + 1000]))))
        for r in found:
            pending.pop(str(r[0]), None)
    if rows:
        expected = cursor.position + 1
        for r in rows:
            if r[0] - expected < MAX_GAP:
                for missing in range(expected, r[0]):
                    pending[str(missing)] = now
            expected = r[0] + 1
        cursor.position = rows[-1][0]
    cursor.pending = {k: v for k, v in pending.items() if now - v < PENDING_TTL}
    cursor.updated_at = utcnow()
    return found + rows
