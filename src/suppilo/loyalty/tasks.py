"""Periodic loyalty work: expiring points and re-evaluating tiers, one transaction per workspace."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from suppilo.db.base import utcnow
from suppilo.db.session import unit_of_work
from suppilo.loyalty import service


def run_loyalty(factory: sessionmaker[Session], now: datetime | None = None) -> dict[str, int]:
    """Expire due points and refresh tiers in every workspace with an enabled programme; totals of what changed."""
    now = now or utcnow()
    with factory() as session:
        workspaces = service.enabled_workspaces(session)
    totals = {"workspaces": 0, "expired_entries": 0, "expired_points": 0, "tier_changes": 0}
    for workspace_id in workspaces:
        with unit_of_work(factory) as session:
            result = service.run_for_workspace(session, workspace_id, now=now)
        totals["workspaces"] += 1
        for key, value in result.items():
            totals[key] += value
    return totals
