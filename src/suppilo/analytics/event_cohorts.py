"""Acquisition cohorts over the event log: retention by week or month since a contact's first event.

A contact's cohort is the period (UTC calendar month, or Monday-based UTC week) of its first event — or of its first
``start_event`` when one is named. ``retention[k]`` is the share of the cohort with at least one event (or one
``return_event``) in the k-th period after the cohort's own; period 0 is the acquisition period. Periods after ``to``
are not reported. Two routes give the same answer: ``sql`` (two GROUP BY queries on the operational database, the
grid assembled with numpy) and ``columnar`` (one DuckDB query over the columnar copy, see ``columnar``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Integer, cast, extract, func, literal_column, select
from sqlalchemy.orm import Session

from suppilo.analytics import columnar
from suppilo.analytics.columnar import resolve_engine
from suppilo.db.base import utcnow
from suppilo.errors import DomainError
from suppilo.events.models import Event

MAX_PERIODS = 12
EPOCH = date(1970, 1, 1)


def _bucket_expr(session: Session, by: str) -> Any:
    col = Event.occurred_at
    if session.get_bind().dialect.name == "postgresql":
        utc: ColumnElement[datetime] = literal_column("events.occurred_at AT TIME ZONE 'UTC'")
        if by == "month":
            return cast(extract("year", utc) * 12 + extract("month", utc) - 1, Integer)
        day: ColumnElement[int] = literal_column(
            "((events.occurred_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01')", Integer
        )
        return (day + 3) // 7
    # SQLite keeps naive UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]".
    if by == "month":
        return cast(func.substr(col, 1, 4), Integer) * 12 + cast(func.substr(col, 6, 2), Integer) - 1
    day = cast(func.julianday(func.substr(col, 1, 10)) - 2440587.5, Integer)
    return (day + 3) // 7


def bucket_of(by: str, d: date) -> int:
    return columnar.month_bucket(d) if by == "month" else columnar.week_bucket(d)


def bucket_label(by: str, b: int) -> tuple[str, date]:
    """The period's label (``2025-03`` or ISO ``2025-W10``) and first day."""
    if by == "month":
        first = date(b // 12, b % 12 + 1, 1)
        return f"{first.year:04d}-{first.month:02d}", first
    monday = EPOCH + timedelta(days=b * 7 - 3)
    iso = monday.isocalendar()
    return f"{iso.year:04d}-W{iso.week:02d}", monday


def _sql_counts(
    session: Session,
    workspace_id: int,
    by: str,
    end: datetime,
    start_event: str | None,
    return_event: str | None,
    first_bucket: int | None,
    last_bucket: int,
    max_periods: int,
) -> tuple[dict[int, int], dict[tuple[int, int], int]]:
    bucket = _bucket_expr(session, by)
    base = [Event.workspace_id == workspace_id, Event.contact_id.is_not(None), Event.occurred_at < end]
    acq_q = select(Event.contact_id, func.min(bucket)).where(*base).group_by(Event.contact_id)
    if start_event:
        acq_q = acq_q.where(Event.name == start_event)
    act_q = select(Event.contact_id, bucket).where(*base).group_by(Event.contact_id, bucket)
    if return_event:
        act_q = act_q.where(Event.name == return_event)
    acq = session.execute(acq_q).all()
    sizes: dict[int, int] = {}
    active: dict[tuple[int, int], int] = {}
    if not acq:
        return sizes, active
    a_ids = np.array([r[0] for r in acq], dtype=np.int64)
    a_b0 = np.array([int(r[1]) for r in acq], dtype=np.int64)
    lo = first_bucket if first_bucket is not None else int(a_b0.min())
    keep = (a_b0 >= lo) & (a_b0 <= last_bucket)
    a_ids, a_b0 = a_ids[keep], a_b0[keep]
    for b0, n in zip(*np.unique(a_b0, return_counts=True), strict=True):
        sizes[int(b0)] = int(n)
    act = session.execute(act_q).all()
    if not act or not a_ids.size:
        return sizes, active
    c = np.array([r[0] for r in act], dtype=np.int64)
    b1 = np.array([int(r[1]) for r in act], dtype=np.int64)
    order = np.argsort(a_ids)
    ids_sorted = a_ids[order]
    idx = np.searchsorted(ids_sorted, c)
    found = (idx < ids_sorted.size) & (ids_sorted[np.minimum(idx, ids_sorted.size - 1)] == c)
    b0 = a_b0[order][np.minimum(idx, ids_sorted.size - 1)]
    off = b1 - b0
    ok = found & (off >= 0) & (off <= max_periods)
    pairs, counts = np.unique(np.stack([b0[ok], off[ok]]), axis=1, return_counts=True)
    for (cb, k), n in zip(pairs.T.tolist(), counts.tolist(), strict=True):
        active[(int(cb), int(k))] = int(n)
    return sizes, active


def event_cohort_report(
    session: Session,
    workspace_id: int,
    *,
    by: str = "month",
    start_event: str | None = None,
    return_event: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    max_periods: int = MAX_PERIODS,
    engine: str = "sql",
    store: columnar.ColumnarStore | None = None,
) -> dict[str, Any]:
    """Retention of acquisition cohorts over events; ``engine`` is ``sql`` or ``columnar`` (needs ``store``)."""
    if by not in ("week", "month"):
        raise DomainError("by", "by must be week or month")
    if not 1 <= max_periods <= 520:
        raise DomainError("max_periods", "max_periods must be between 1 and 520")
    to = date_to or utcnow().date()
    if date_from is not None and date_from > to:
        raise DomainError(
            "from",
            f"'from' ({date_from}) is after 'to' ({to})",
            code="period_reversed",
            params={"from": date_from.isoformat(), "to": to.isoformat()},
        )
    end = datetime(to.year, to.month, to.day, tzinfo=UTC) + timedelta(days=1)
    first = bucket_of(by, date_from) if date_from is not None else None
    last = bucket_of(by, to)
    start_event = (start_event or "").strip() or None
    return_event = (return_event or "").strip() or None
    args = (by, end, start_event, return_event, first, last, max_periods)
    engine = resolve_engine(session, engine, store)
    if engine == "columnar":
        if store is None:
            raise DomainError("engine", "the columnar engine needs a data directory")
        with store.connect(session) as con:
            columnar.sync(session, con, workspace_id)
            sizes, active = columnar.cohort_counts(con, workspace_id, *args)
    elif engine == "sql":
        sizes, active = _sql_counts(session, workspace_id, *args)
    else:
        raise DomainError("engine", "engine must be sql or columnar")
    rows = []
    for b0 in sorted(sizes):
        size = sizes[b0]
        span = min(last - b0, max_periods)
        retained = [active.get((b0, k), 0) for k in range(span + 1)]
        label, first_day = bucket_label(by, b0)
        rows.append(
            {
                "cohort": label,
                "start": first_day.isoformat(),
                "contacts": size,
                "retained": retained,
                "retention": [n / size for n in retained],
            }
        )
    empty = not rows
    return {
        "by": by,
        "start_event": start_event,
        "return_event": return_event,
        "from": date_from.isoformat() if date_from else None,
        "to": to.isoformat(),
        "max_periods": max_periods,
        "engine": engine,
        "cohorts": rows,
        "insufficient_data": empty,
        "reason": "no contacts with events in the period" if empty else "",
    }
