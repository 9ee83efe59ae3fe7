"""Periodic recommendations: recompute each workspace with orders when its last computation is 24 h old or its
orders changed, one transaction per workspace."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from suppilo.db.base import utcnow
from suppilo.db.session import unit_of_work
from suppilo.recommendations import service


def run_recommendations(factory: sessionmaker[Session], now: datetime | None = None) -> dict[str, int]:
    """Recompute what is due; totals: workspaces checked and recomputed, rules and similar pairs stored."""
    now = now or utcnow()
    with factory() as session:
        workspaces = service.workspaces_with_orders(session)
    totals = {"workspaces": len(workspaces), "recomputed": 0, "together_rules": 0, "similar_pairs": 0}
    for workspace_id in workspaces:
        with unit_of_work(factory) as session:
            if not service.needs_recompute(session, workspace_id, now):
                continue
            result = service.recompute(session, workspace_id, now)
        totals["recomputed"] += 1
        totals["together_rules"] += result["together_rules"]
        totals["similar_pairs"] += result["similar_pairs"]
    return totals
