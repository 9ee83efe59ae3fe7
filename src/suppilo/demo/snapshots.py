"""The report snapshots of a freshly loaded demo, computed before it is served: the dashboard's periods, the default
attribution report at both levels and the forecast's default view — what the worker's ``dashboard``,
``attribution`` and ``forecast`` jobs would otherwise compute only after the first page views asked for them."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from suppilo.analytics import attribution_snapshots, dashboard
from suppilo.db.base import utcnow
from suppilo.deals import forecast_snapshots


def precompute(
    factory: sessionmaker[Session], workspace_id: int, *, progress: Callable[[str], None] | None = None
) -> int:
    """Compute every snapshot of ``workspace_id`` that is missing or no longer current (each in its own unit of
    work, with the jobs' own refresh functions); returns how many were computed."""
    today = utcnow().date()
    done = 0

    def note(what: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(what)

    for days in dashboard.PERIODS:
        with factory() as session:
            row = dashboard.snapshot(session, workspace_id, days)
            if row is None or not dashboard.is_current(session, row, today):
                dashboard.refresh(session, workspace_id, days, today)
                session.commit()
                note(f"dashboard, {days} days")
    for level in attribution_snapshots.LEVELS:
        with factory() as session:
            kept = attribution_snapshots.snapshot(session, workspace_id, level, attribution_snapshots.DEFAULT_DAYS)
            current = kept is not None and attribution_snapshots.is_current(session, kept, today)
        if not current:
            attribution_snapshots.refresh_apart(factory, workspace_id, level, today=today)
            note(f"attribution by {level}")
    with factory() as session:
        key = (workspace_id, *forecast_snapshots.DEFAULT_VIEW)
        stored = forecast_snapshots.snapshot(session, *key)
        if stored is None or not forecast_snapshots.is_current(session, stored):
            forecast_snapshots.refresh(session, *key)
            session.commit()
            note("forecast")
    return done
