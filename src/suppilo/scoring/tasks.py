"""Periodic job: rescore what changed since the last run, one transaction per workspace."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.db.base import utcnow
from suppilo.scoring import service
from suppilo.workspaces.models import Workspace


def run_scoring(factory: sessionmaker[Session]) -> dict[int, dict[str, Any]]:
    """Fit for contacts and companies updated since the last run (all after an ICP change), engagement for
    contacts with new events. Returns workspace id → {"fit", "companies", "engagement"}: scores changed.
    """
    with factory() as session:
        workspaces = [int(w) for w in session.scalars(select(Workspace.id).order_by(Workspace.id))]
    out: dict[int, dict[str, Any]] = {}
    for ws in workspaces:
        with factory() as session:
            result = service.run_workspace(session, ws, utcnow())
            session.commit()
        out[ws] = {
            "fit": len(result.fit.changed),
            "companies": len(result.companies.changed),
            "engagement": len(result.engagement.changed),
        }
    return out
