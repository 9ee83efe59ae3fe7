"""RFM for a workspace's customers, written onto each contact as properties segments, offers and templates read:
``rfm_code`` ("545": recency, frequency, monetary scores 1–5) and ``rfm_group`` (champions, loyal, at risk ...).

Revenue is net of refunds in the workspace currency (the exchange-rate table converts other currencies; an order
without a usable rate is refused with the reason rather than silently dropped).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from suppilo.analytics import rates
from suppilo.commerce.models import Order
from suppilo.contacts import properties
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.db.tables import table_of
from suppilo.engine import rfm as rfm_engine
from suppilo.workspaces.models import Workspace

STATUSES = ("completed", "partially_refunded")
PROPERTIES = {
    "rfm_code": ("string", [], "RFM code", "Recency, frequency and monetary scores 1-5 (e.g. 545)."),
    "rfm_group": ("enum", list(rfm_engine.GROUPS), "RFM group", "The RFM group (champions, loyal, at risk ...)."),
}


def _ensure_properties(session: Session, workspace_id: int) -> None:
    for name, (kind, options, label, description) in PROPERTIES.items():
        properties.ensure_definition(
            session, workspace_id, name=name, type=kind, label=label, description=description, options=options
        )


def compute(session: Session, workspace_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Score every customer of the workspace and store the result on the contacts; returns the group counts."""
    now = now or utcnow()
    book = rates.rate_book(session, workspace_id)
    last: dict[int, datetime] = {}
    count: dict[int, int] = defaultdict(int)
    spent: dict[int, int] = defaultdict(int)
    q = select(Order.contact_id, Order.placed_at, Order.currency, Order.total_minor, Order.refunded_minor).where(
        Order.workspace_id == workspace_id,
        Order.contact_id.is_not(None),
        Order.status.in_(STATUSES),
        Order.placed_at <= now,
    )
    for cid, placed, ccy, total, refunded in session.execute(q).tuples():
        if cid is None:  # excluded by the query; narrows the column's type
            continue
        net = max(int(total) - int(refunded or 0), 0)
        spent[cid] += book.convert(net, ccy, book.home, placed.date())
        count[cid] += 1
        if cid not in last or placed > last[cid]:
            last[cid] = placed
    ids = sorted(last)
    if not ids:
        return {"customers": 0, "groups": {}}
    result = rfm_engine.rfm(
        [(now - last[c]).total_seconds() / 86_400 for c in ids], [count[c] for c in ids], [spent[c] for c in ids]
    )
    _ensure_properties(session, workspace_id)
    table = table_of(Contact)
    stmt = (
        update(table)
        .where(table.c.workspace_id == workspace_id, table.c.id == bindparam("b_id"))
        .values(properties=bindparam("b_props"))
    )
    values = dict(zip(ids, zip(result.codes, result.groups, strict=True), strict=True))
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        params = []
        for cid, props in session.execute(
            select(Contact.id, Contact.properties).where(Contact.workspace_id == workspace_id, Contact.id.in_(chunk))
        ):
            code, group = values[cid]
            current = dict(props or {})
            if current.get("rfm_code") != code or current.get("rfm_group") != group:
                params.append({"b_id": cid, "b_props": {**current, "rfm_code": code, "rfm_group": group}})
        if params:
            session.execute(stmt, params, execution_options={"synchronize_session": False})
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Contact) and obj.workspace_id == workspace_id:
            session.expire(obj, ["properties"])
    session.flush()
    return {"customers": len(ids), "groups": dict(Counter(result.groups).most_common())}


def run_rfm(factory: sessionmaker[Session]) -> dict[int, dict[str, Any]]:
    """The daily job: RFM for every workspace with orders."""
    with factory() as session:
        workspaces = sorted(set(session.scalars(select(Order.workspace_id).distinct())))
        known = set(session.scalars(select(Workspace.id)))
    out: dict[int, dict[str, Any]] = {}
    for ws in workspaces:
        if ws not in known:
            continue
        with factory() as session:
            try:
                out[ws] = compute(session, ws)
                session.commit()
            except rates.MissingRate as exc:
                session.rollback()
                out[ws] = {"error": exc.message}
    return out
