"""The web dashboard's figures: computed from scratch by the analytics services, kept as one snapshot row per
(workspace, period length) so that a page view reads precomputed numbers.

* :func:`compute` is the from-scratch computation (lifecycle funnel by country, spend report by channel and by month,
  contacts per stage).
* :func:`watermark` names the source rows a computation saw: the highest id of every table the figures read
  (stage changes, contacts, merges, orders, refunds, spend, exchange rates, CLV fits, lifecycle stages) — index
  lookups only, so a page view can afford it. New rows move it; edits in place (a cancelled order, a contact's new
  country) do not, which is why a snapshot is also recomputed once it is ``MAX_AGE_SECONDS`` old.
* :func:`run_refresh` (the worker's ``dashboard`` job, every ``REFRESH_SECONDS``) recomputes every snapshot whose
  watermark moved, whose day has passed or which is older than ``MAX_AGE_SECONDS``; :func:`rebuild` recomputes all
  of them (or one workspace's) regardless.

A snapshot's figures are exactly what :func:`compute` answered at ``computed_at``; the page shows that time.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.analytics import service as analytics
from suppilo.analytics.models import ClvFit, DashboardSnapshot, ExchangeRate, MarketingSpend
from suppilo.commerce.models import Order, Refund
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact, ContactMerge, LifecycleStage, StageChange
from suppilo.contacts.schemas import LifecycleStageRead
from suppilo.db.base import utcnow
from suppilo.errors import DomainError
from suppilo.workspaces.models import Workspace

log = logging.getLogger("suppilo.analytics")

PERIODS = (30, 90, 365)
REFRESH_SECONDS = 15.0
MAX_AGE_SECONDS = 300.0
_WATERMARK_TABLES = (
    StageChange,
    Contact,
    ContactMerge,
    Order,
    Refund,
    MarketingSpend,
    ExchangeRate,
    ClvFit,
    LifecycleStage,
)


def compute(session: Session, workspace_id: int, days: int, today: date) -> dict[str, Any]:
    """The dashboard's numbers for the ``days`` up to ``today``, from the analytics and contacts services."""
    start = today - timedelta(days=days - 1)
    errors: dict[str, str] = {}
    refusals: dict[str, dict[str, Any]] = {}  # the same refusals' codes and parameters (worded by the web page)

    def report(name: str, run: Any, empty: dict[str, Any]) -> dict[str, Any]:
        # A report that cannot be computed (e.g. an order currency without exchange rates) is explained on its
        # card; the rest of the dashboard still shows.
        try:
            return dict(run())
        except DomainError as exc:
            errors[name] = exc.message
            refusals[name] = {"code": exc.code, "params": exc.params}
            return empty

    no_money: dict[str, Any] = {"currency": None, "rows": [], "totals": {}}
    funnel = report(
        "funnel",
        lambda: analytics.funnel_report(session, workspace_id, start, today, "country"),
        {"stages": [], "all": {"stages": [], "insufficient_data": True}, "groups": {}},
    )
    money = report(
        "money",
        lambda: analytics.spend_reports(session, workspace_id, start, today, ["channel", "month"]),
        {"channel": no_money, "month": no_money},
    )
    by_channel, by_month = money["channel"], money["month"]
    return {
        "funnel": funnel,
        "channel": by_channel,
        "month": by_month,
        "stages": contacts_service.list_stages(session, workspace_id),
        "from": start,
        "to": today,
        "errors": errors,
        "refusals": refusals,
        "computed_at": utcnow(),
    }


def watermark(session: Session) -> str:
    """The highest id of every table the figures read (one statement of index lookups)."""
    cols = [select(func.max(t.id)).scalar_subquery() for t in _WATERMARK_TABLES]
    row = session.execute(select(*cols)).one()
    return ".".join(str(v or 0) for v in row)


def _to_json(data: dict[str, Any]) -> dict[str, Any]:
    return {
        **data,
        "stages": [s.model_dump() for s in data["stages"]],
        "from": data["from"].isoformat(),
        "to": data["to"].isoformat(),
        "computed_at": data["computed_at"].isoformat(),
    }


def _from_json(payload: dict[str, Any]) -> dict[str, Any]:
    computed = datetime.fromisoformat(payload["computed_at"])
    return {
        **payload,
        "stages": [LifecycleStageRead(**s) for s in payload["stages"]],
        "from": date.fromisoformat(payload["from"]),
        "to": date.fromisoformat(payload["to"]),
        "computed_at": computed if computed.tzinfo else computed.replace(tzinfo=UTC),
    }


def snapshot(session: Session, workspace_id: int, days: int) -> DashboardSnapshot | None:
    return session.scalar(
        select(DashboardSnapshot).where(DashboardSnapshot.workspace_id == workspace_id, DashboardSnapshot.days == days)
    )


def figures_of(row: DashboardSnapshot) -> dict[str, Any]:
    return _from_json(row.data)


def is_current(session: Session, row: DashboardSnapshot, today: date, mark: str | None = None) -> bool:
    """Whether the snapshot still equals a from-scratch computation as far as new rows and the clock tell."""
    age = (utcnow() - row.computed_at).total_seconds()
    return row.as_of == today and age < MAX_AGE_SECONDS and row.watermark == (mark or watermark(session))


def _computed(session: Session, workspace_id: int, days: int, today: date) -> tuple[str, float, dict[str, Any]]:
    mark = watermark(session)  # read before the computation: rows committed meanwhile move it again
    started = time.perf_counter()
    data = compute(session, workspace_id, days, today)
    return mark, time.perf_counter() - started, data


def store(
    session: Session, workspace_id: int, days: int, today: date, mark: str, seconds: float, data: dict[str, Any]
) -> None:
    """Write computed figures as the period's snapshot (the caller commits)."""
    row = snapshot(session, workspace_id, days)
    if row is None:
        row = DashboardSnapshot(workspace_id=workspace_id, days=days)
        session.add(row)
    row.as_of = today
    row.watermark = mark
    row.computed_at = data["computed_at"]
    row.seconds = round(seconds, 3)
    row.data = _to_json(data)
    session.flush()


def refresh(session: Session, workspace_id: int, days: int, today: date | None = None) -> dict[str, Any]:
    """Compute the figures from scratch and store them as the snapshot (the caller commits)."""
    today = today or utcnow().date()
    mark, seconds, data = _computed(session, workspace_id, days, today)
    store(session, workspace_id, days, today, mark, seconds, data)
    return data


def refresh_apart(
    factory: sessionmaker[Session], workspace_id: int, days: int, today: date | None = None
) -> dict[str, Any]:
    """:func:`refresh` with the computation in a read-only transaction of its own and only the snapshot's write in a
    unit of work of ``factory``: on SQLite a write transaction takes the database's write lock at its start
    (``BEGIN IMMEDIATE``), and the seconds of a computation must not hold tracking, imports and every other writer up.
    """
    today = today or utcnow().date()
    bind = factory.kw["bind"].execution_options(sqlite_begin="DEFERRED")
    with Session(bind=bind, expire_on_commit=False) as read:
        mark, seconds, data = _computed(read, workspace_id, days, today)
    with factory() as write:
        store(write, workspace_id, days, today, mark, seconds, data)
        write.commit()
    return data


def run_refresh(factory: sessionmaker[Session]) -> int:
    """The worker job: recompute the snapshots that are no longer current (each in its own unit of work);
    returns how many were recomputed."""
    today = utcnow().date()
    with factory() as session:
        mark = watermark(session)
        due = [
            (row.workspace_id, row.days)
            for row in session.scalars(select(DashboardSnapshot))
            if not is_current(session, row, today, mark)
        ]
    for workspace_id, days in due:
        try:
            refresh_apart(factory, workspace_id, days, today)
        except Exception:
            log.exception("dashboard refresh failed for workspace %s (%s days)", workspace_id, days)
    return len(due)


def rebuild(factory: sessionmaker[Session], workspace_id: int | None = None) -> int:
    """Recompute every period's snapshot of every workspace (or of one) from scratch; returns how many."""
    with factory() as session:
        ids = (
            [workspace_id]
            if workspace_id is not None
            else list(session.scalars(select(Workspace.id).order_by(Workspace.id)))
        )
    done = 0
    for ws in ids:
        for days in PERIODS:
            refresh_apart(factory, ws, days)
            done += 1
    return done
