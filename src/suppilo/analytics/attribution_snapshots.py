"""The web attribution page's figures for its default period: the report of ``analytics.service.attribution_report``
kept as one snapshot row per (workspace, level, period length), so that a page view reads precomputed numbers.

* :func:`compute` is the from-scratch computation: exactly ``attribution_report`` for the ``days`` up to ``today``
  (the API's and the CLI's report for the same parameters).
* :func:`watermark` names the source rows a computation saw: the highest id of every table the report reads
  (touches, orders, refunds, exchange rates, contact merges) — index lookups only. New rows move it; edits in place
  (a cancelled order, a workspace's new currency) do not, which is why a snapshot is also recomputed once it is
  ``MAX_AGE_SECONDS`` old.
* :func:`run_refresh` (the worker's ``attribution`` job, every ``REFRESH_SECONDS``) recomputes every snapshot whose
  watermark moved, whose day has passed or which is older than ``MAX_AGE_SECONDS``.

A snapshot's figures are exactly what :func:`compute` answered at ``computed_at``; the page shows that time.
"""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.analytics import service as analytics
from suppilo.analytics.models import AttributionSnapshot, ExchangeRate
from suppilo.commerce.models import Order, Refund
from suppilo.contacts.models import ContactMerge
from suppilo.db.base import utcnow
from suppilo.events.models import Touch

log = logging.getLogger("suppilo.analytics")

LEVELS = ("channel", "campaign")
DEFAULT_DAYS = analytics.DEFAULT_DAYS  # the report's period when no dates are given
REFRESH_SECONDS = 15.0
MAX_AGE_SECONDS = 300.0
# A snapshot older than this was not kept by a worker (none is running): the web process refreshes it itself.
ORPHAN_SECONDS = MAX_AGE_SECONDS + 60.0
_WATERMARK_TABLES = (Touch, Order, Refund, ExchangeRate, ContactMerge)


def period_of(days: int, today: date) -> tuple[date, date]:
    """The inclusive dates of the ``days`` up to ``today`` (the report's default period when ``days`` is 90)."""
    return today - timedelta(days=days - 1), today


def compute(session: Session, workspace_id: int, level: str, days: int, today: date) -> dict[str, Any]:
    """The attribution report of the ``days`` up to ``today`` at ``level``, computed from scratch."""
    frm, to = period_of(days, today)
    return analytics.attribution_report(session, workspace_id, frm, to, level)


def watermark(session: Session) -> str:
    """The highest id of every table the report reads (one statement of index lookups)."""
    cols = [select(func.max(t.id)).scalar_subquery() for t in _WATERMARK_TABLES]
    row = session.execute(select(*cols)).one()
    return ".".join(str(v or 0) for v in row)


def snapshot(session: Session, workspace_id: int, level: str, days: int) -> AttributionSnapshot | None:
    return session.scalar(
        select(AttributionSnapshot).where(
            AttributionSnapshot.workspace_id == workspace_id,
            AttributionSnapshot.level == level,
            AttributionSnapshot.days == days,
        )
    )


def figures_of(row: AttributionSnapshot) -> dict[str, Any]:
    """The stored report, with ``computed_at`` (when it was computed)."""
    return {**row.data, "computed_at": row.computed_at}


def is_orphaned(row: AttributionSnapshot) -> bool:
    """Whether the worker has evidently not been keeping the snapshot (it refreshes every ``REFRESH_SECONDS`` and at
    ``MAX_AGE_SECONDS`` at the latest)."""
    return (utcnow() - row.computed_at).total_seconds() >= ORPHAN_SECONDS


def is_current(session: Session, row: AttributionSnapshot, today: date, mark: str | None = None) -> bool:
    """Whether the snapshot still equals a from-scratch computation as far as new rows and the clock tell."""
    age = (utcnow() - row.computed_at).total_seconds()
    return row.as_of == today and age < MAX_AGE_SECONDS and row.watermark == (mark or watermark(session))


def store(
    session: Session,
    workspace_id: int,
    level: str,
    days: int,
    today: date,
    mark: str,
    computed_at: datetime,
    seconds: float,
    data: dict[str, Any],
) -> None:
    """Write a computed report as the snapshot (the caller commits)."""
    row = snapshot(session, workspace_id, level, days)
    if row is None:
        row = AttributionSnapshot(workspace_id=workspace_id, level=level, days=days)
        session.add(row)
    row.as_of = today
    row.watermark = mark
    row.computed_at = computed_at
    row.seconds = round(seconds, 3)
    row.data = data
    session.flush()


def _computed(
    session: Session, workspace_id: int, level: str, days: int, today: date
) -> tuple[str, datetime, float, dict[str, Any]]:
    mark = watermark(session)  # read before the computation: rows committed meanwhile move it again
    computed_at = utcnow()
    started = time.perf_counter()
    data = compute(session, workspace_id, level, days, today)
    return mark, computed_at, time.perf_counter() - started, data


def refresh(
    session: Session, workspace_id: int, level: str, days: int = DEFAULT_DAYS, today: date | None = None
) -> dict[str, Any]:
    """Compute the report from scratch and store it as the snapshot in ``session`` (the caller commits)."""
    today = today or utcnow().date()
    mark, computed_at, seconds, data = _computed(session, workspace_id, level, days, today)
    store(session, workspace_id, level, days, today, mark, computed_at, seconds, data)
    return {**data, "computed_at": computed_at}


def refresh_apart(
    factory: sessionmaker[Session],
    workspace_id: int,
    level: str,
    days: int = DEFAULT_DAYS,
    today: date | None = None,
    read: Session | None = None,
) -> dict[str, Any]:
    """:func:`refresh` with the computation in a read-only transaction (``read``, else a deferred one of its own) and
    only the snapshot's write in a unit of work of ``factory``: on SQLite a write transaction takes the database's
    write lock at its start, and the seconds of a computation must not hold every other writer up."""
    today = today or utcnow().date()
    if read is not None:
        mark, computed_at, seconds, data = _computed(read, workspace_id, level, days, today)
    else:
        bind = factory.kw["bind"].execution_options(sqlite_begin="DEFERRED")
        with Session(bind=bind, expire_on_commit=False) as own:
            mark, computed_at, seconds, data = _computed(own, workspace_id, level, days, today)
    with factory() as write:
        store(write, workspace_id, level, days, today, mark, computed_at, seconds, data)
        write.commit()
    return {**data, "computed_at": computed_at}


def run_refresh(factory: sessionmaker[Session]) -> int:
    """The worker job: recompute the snapshots that are no longer current (each in its own unit of work);
    returns how many were recomputed."""
    today = utcnow().date()
    with factory() as session:
        mark = watermark(session)
        due = [
            (row.workspace_id, row.level, row.days)
            for row in session.scalars(select(AttributionSnapshot))
            if not is_current(session, row, today, mark)
        ]
    for workspace_id, level, days in due:
        try:
            refresh_apart(factory, workspace_id, level, days, today)
        except Exception:
            log.exception("attribution refresh failed for workspace %s (%s, %s days)", workspace_id, level, days)
    return len(due)
