"""Each customer's own buying cycle, for win-back: ``lapse_at`` = the last order + 1.5 × their usual gap between
orders (the median of their gaps; a customer with one order gets the workspace's median gap; at least 30 days).

A worker job keeps the ``lapse_at`` date property current; the win-back playbook triggers on that date, so a
customer who buys every two weeks is approached much sooner than one who buys twice a year.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from datetime import date, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from suppilo.commerce.models import Order
from suppilo.contacts import properties
from suppilo.contacts.models import Contact
from suppilo.journeys.models import Journey

PROPERTY = "lapse_at"
FACTOR = 1.5
MIN_DAYS = 30
DEFAULT_GAP_DAYS = 90


def ensure_lapse_property(session: Session, workspace_id: int) -> None:
    """Declare the ``lapse_at`` date property of contacts if the workspace lacks it."""
    properties.ensure_definition(
        session,
        workspace_id,
        name=PROPERTY,
        type="date",
        label="Lapses on",
        description="When this customer is overdue by their own buying cycle (kept by suppilo).",
    )


def lapse_dates(orders: dict[int, list[datetime]]) -> dict[int, date]:
    """``lapse_at`` per contact from their order times."""
    gaps_all: list[float] = []
    own: dict[int, float] = {}
    for cid, times in orders.items():
        times = sorted(times)
        gaps = [(b - a).total_seconds() / 86400 for a, b in itertools.pairwise(times) if b > a]
        if gaps:
            own[cid] = statistics.median(gaps)
            gaps_all.extend(gaps)
    fallback = statistics.median(gaps_all) if gaps_all else DEFAULT_GAP_DAYS
    out: dict[int, date] = {}
    for cid, times in orders.items():
        gap = own.get(cid, fallback)
        out[cid] = (max(times) + timedelta(days=max(MIN_DAYS, FACTOR * gap))).date()
    return out


def refresh_lapse_dates(session: Session, workspace_id: int) -> int:
    """Recompute ``lapse_at`` for every customer of the workspace; returns how many changed."""
    orders: dict[int, list[datetime]] = defaultdict(list)
    for cid, placed in session.execute(
        select(Order.contact_id, Order.placed_at).where(
            Order.workspace_id == workspace_id, Order.contact_id.is_not(None), Order.status != "cancelled"
        )
    ):
        if cid is not None:  # the query excludes them; this tells the type checker
            orders[cid].append(placed)
    dates = lapse_dates(orders)
    changed = 0
    ids = sorted(dates)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        for cid, props in session.execute(
            select(Contact.id, Contact.properties).where(Contact.workspace_id == workspace_id, Contact.id.in_(chunk))
        ):
            value = dates[cid].isoformat()
            if (props or {}).get(PROPERTY) != value:
                session.execute(
                    update(Contact).where(Contact.id == cid).values(properties={**(props or {}), PROPERTY: value})
                )
                changed += 1
    return changed


def run_lapse_refresh(factory: sessionmaker[Session]) -> int:
    """The worker job: refresh ``lapse_at`` in workspaces with an active win-back journey."""
    with factory() as session:
        workspaces = set(
            session.scalars(
                select(Journey.workspace_id).where(Journey.status == "active", Journey.playbook == "win_back")
            )
        )
    total = 0
    for ws in sorted(workspaces):
        with factory() as session:
            total += refresh_lapse_dates(session, ws)
            session.commit()
    return total
