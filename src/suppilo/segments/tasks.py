"""Periodic job: re-evaluate segments whose membership can change with the clock alone."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.db.base import utcnow
from suppilo.segments import service
from suppilo.segments.models import Segment


def run_time_refresh(factory: sessionmaker[Session]) -> dict[int, int]:
    """Refresh time-relative segments (and the segments using them), one transaction per workspace.

    Returns workspace id → number of membership changes.
    """
    with factory() as session:
        rows = session.execute(select(Segment.workspace_id, Segment.dependencies).where(Segment.kind == "dynamic"))
        workspaces = sorted({int(ws) for ws, deps in rows if "time" in (deps or [])})
    out: dict[int, int] = {}
    for ws in workspaces:
        with factory() as session:
            result = service.refresh_time_relative(session, ws, utcnow())
            session.commit()
        out[ws] = sum(map(len, result.entered.values())) + sum(map(len, result.exited.values()))
    return out
