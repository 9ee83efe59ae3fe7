"""Periodic job: rescore what changed since the last run, one transaction per workspace."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.db.base import utcnow
from suppilo.scoring import predictive, service
from suppilo.workspaces.models import Workspace


def run_scoring(factory: sessionmaker[Session]) -> dict[int, dict[str, Any]]:
    """Fit for contacts and companies updated since the last run (all after an ICP change), engagement for
    contacts with new events, predictive (retrained weekly) for contacts whose scores changed. Returns workspace id →
    {"fit", "companies", "engagement"[, "predictive"]}: how many scores changed.
    """
    with factory() as session:
        workspaces = [int(w) for w in session.scalars(select(Workspace.id).order_by(Workspace.id))]
    out: dict[int, dict[str, Any]] = {}
    for ws in workspaces:
        with factory() as session:
            now = utcnow()
            result = service.run_workspace(session, ws, now)
            touched = sorted(set(result.fit.changed) | set(result.engagement.changed))
            predicted = predictive.run(session, ws, touched, now)
            session.commit()
        out[ws] = {
            "fit": len(result.fit.changed),
            "companies": len(result.companies.changed),
            "engagement": len(result.engagement.changed),
        }
        if predicted is not None:
            out[ws]["predictive"] = len(predicted.changed)
    return out
