"""The web forecast page's figures: ``deals.forecast.workspace_forecast`` computed from scratch and kept as one snapshot
row per (workspace, grouping, pipeline, stalls grouping), so that a page view reads precomputed numbers.

* :func:`watermark` names the source rows a computation saw: the workspace's deal count, highest deal id and latest
  deal update (one read of the workspace's deals), and the highest id of the stage changes, pipeline stages and
  exchange rates. New deals, edits, deletions and stage moves move it; a stage's new probability, a sales team's new
  member or the passing of time (stalled deals) do not, which is why a snapshot is also recomputed once it is
  ``MAX_AGE_SECONDS`` old.
* :func:`run_refresh` (the worker's ``forecast`` job, every ``REFRESH_SECONDS``) recomputes every snapshot that is no
  longer current, and computes the page's default view ahead for every workspace with open deals.

A snapshot's figures are exactly what :func:`compute` answered at ``computed_at``; the page shows that time.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.analytics.models import ExchangeRate
from suppilo.db.base import utcnow
from suppilo.deals import forecast as deals_forecast
from suppilo.deals.models import Deal, DealStageChange, ForecastSnapshot, PipelineStage
from suppilo.deals.schemas import ForecastRead
from suppilo.workspaces.models import Workspace

log = logging.getLogger("suppilo.deals")

REFRESH_SECONDS = 15.0
MAX_AGE_SECONDS = 300.0
DEFAULT_VIEW: tuple[str, int | None, str] = ("month", None, "team")  # the page's grouping, pipeline, stalls grouping


def compute(
    session: Session, workspace_id: int, group_by: str, pipeline_id: int | None, stalls_by: str
) -> ForecastRead:
    """The from-scratch forecast (in the workspace's currency with its exchange-rate table)."""
    return deals_forecast.workspace_forecast(
        session, workspace_id, group_by=group_by, pipeline_id=pipeline_id, stalls_by=stalls_by
    )


def watermark(session: Session, workspace_id: int) -> str:
    """The source rows the forecast reads, as one string (one statement)."""
    deals = (
        select(func.count(), func.max(Deal.id), func.max(Deal.updated_at))
        .where(Deal.workspace_id == workspace_id)
        .subquery()
    )
    ids = [select(func.max(t.id)).scalar_subquery() for t in (DealStageChange, PipelineStage, ExchangeRate)]
    row = session.execute(select(deals, *ids)).one()
    return ".".join("0" if v is None else str(v) for v in row)


def snapshot(
    session: Session, workspace_id: int, group_by: str, pipeline_id: int | None, stalls_by: str
) -> ForecastSnapshot | None:
    return session.scalar(
        select(ForecastSnapshot).where(
            ForecastSnapshot.workspace_id == workspace_id,
            ForecastSnapshot.group_by == group_by,
            ForecastSnapshot.pipeline_key == (pipeline_id or 0),
            ForecastSnapshot.stalls_by == stalls_by,
        )
    )


def figures_of(row: ForecastSnapshot) -> ForecastRead:
    return ForecastRead.model_validate(row.data)


def computed_at(row: ForecastSnapshot) -> datetime:
    return row.computed_at  # UTCDateTime: always timezone-aware


def is_current(session: Session, row: ForecastSnapshot, mark: str | None = None) -> bool:
    """Whether the snapshot still equals a from-scratch computation as far as the source rows and the clock tell."""
    age = (utcnow() - computed_at(row)).total_seconds()
    return age < MAX_AGE_SECONDS and row.watermark == (mark or watermark(session, row.workspace_id))


def _computed(
    session: Session, workspace_id: int, group_by: str, pipeline_id: int | None, stalls_by: str
) -> tuple[str, datetime, float, ForecastRead]:
    mark = watermark(session, workspace_id)  # read before the computation: rows committed meanwhile move it again
    at = utcnow()
    started = time.perf_counter()
    data = compute(session, workspace_id, group_by, pipeline_id, stalls_by)
    return mark, at, time.perf_counter() - started, data


def refresh(
    session: Session, workspace_id: int, group_by: str, pipeline_id: int | None, stalls_by: str
) -> ForecastSnapshot:
    """Compute the forecast from scratch and store it as the snapshot (the caller commits)."""
    computed = _computed(session, workspace_id, group_by, pipeline_id, stalls_by)
    return store(session, workspace_id, group_by, pipeline_id, stalls_by, *computed)


def refresh_apart(
    factory: sessionmaker[Session], workspace_id: int, group_by: str, pipeline_id: int | None, stalls_by: str
) -> None:
    """:func:`refresh` with the computation in a read-only transaction of its own and only the snapshot's write in a
    unit of work of ``factory``, so that on SQLite the database's write lock (taken at the start of every write
    transaction) is not held while the forecast is computed."""
    bind = factory.kw["bind"].execution_options(sqlite_begin="DEFERRED")
    with Session(bind=bind, expire_on_commit=False) as read:
        computed = _computed(read, workspace_id, group_by, pipeline_id, stalls_by)
    with factory() as write:
        store(write, workspace_id, group_by, pipeline_id, stalls_by, *computed)
        write.commit()


def store(
    session: Session,
    workspace_id: int,
    group_by: str,
    pipeline_id: int | None,
    stalls_by: str,
    mark: str,
    at: datetime,
    seconds: float,
    data: ForecastRead,
) -> ForecastSnapshot:
    """Write a computed forecast as the snapshot of its parameters (the caller commits)."""
    row = snapshot(session, workspace_id, group_by, pipeline_id, stalls_by)
    if row is None:
        row = ForecastSnapshot(
            workspace_id=workspace_id, group_by=group_by, pipeline_key=pipeline_id or 0, stalls_by=stalls_by
        )
        session.add(row)
    row.watermark = mark
    row.computed_at = at
    row.seconds = round(seconds, 3)
    row.data = data.model_dump(mode="json")
    session.flush()
    return row


def run_refresh(factory: sessionmaker[Session]) -> int:
    """The worker job: recompute the snapshots that are no longer current (each in its own unit of work);
    returns how many were recomputed."""
    due: list[tuple[int, str, int | None, str]] = []
    with factory() as session:
        marks: dict[int, str] = {}
        stored: set[tuple[int, str, int | None, str]] = set()
        for row in session.scalars(select(ForecastSnapshot).order_by(ForecastSnapshot.id)):
            key = (row.workspace_id, row.group_by, row.pipeline_key or None, row.stalls_by)
            stored.add(key)
            if row.workspace_id not in marks:
                marks[row.workspace_id] = watermark(session, row.workspace_id)
            if not is_current(session, row, marks[row.workspace_id]):
                due.append(key)
        # The page's default view is computed ahead for every workspace with open deals, so that even its first view
        # reads a snapshot.
        has_open = select(Deal.id).where(Deal.workspace_id == Workspace.id, Deal.status == "open").exists()
        for workspace_id in session.scalars(select(Workspace.id).where(has_open).order_by(Workspace.id)):
            key = (workspace_id, *DEFAULT_VIEW)
            if key not in stored:
                due.append(key)
    done = 0
    for workspace_id, group_by, pipeline_id, stalls_by in due:
        try:
            refresh_apart(factory, workspace_id, group_by, pipeline_id, stalls_by)
            done += 1
        except Exception:
            log.exception("forecast refresh failed for workspace %s (%s, %s)", workspace_id, group_by, stalls_by)
    return done
