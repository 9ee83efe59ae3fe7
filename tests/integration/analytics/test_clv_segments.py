"""The CLV fit split by B2B (companies) and B2C (individuals): each segment gets its own fit."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
from sqlalchemy import insert

from suppilo.analytics import service
from suppilo.commerce.models import Order
from suppilo.companies.models import Company
from suppilo.contacts.models import Contact


def _customers(session, ws: int, n: int, rng, *, b2b: str | None, company_id: int | None, rate_scale: float) -> None:
    end = datetime(2025, 7, 1, tzinfo=UTC)
    props = {"customer_type": b2b} if b2b else {}
    people = [
        Contact(
            workspace_id=ws, email=f"s{rng.integers(1e12)}-{ws}@example.fi", properties=props, company_id=company_id
        )
        for _ in range(n)
    ]
    session.add_all(people)
    session.flush()
    rows = []
    for c in people:
        lam, p = rng.gamma(0.9, 1 / rate_scale), rng.beta(0.8, 3.2)
        nu = rng.gamma(3.5, 1 / 37.5)  # Gamma-Gamma spend: each customer's own mean order value
        t = end - timedelta(days=float(rng.uniform(60, 540)))
        while t < end:
            rows.append(
                {
                    "workspace_id": ws,
                    "external_id": f"seg-{c.id}-{len(rows)}",
                    "contact_id": c.id,
                    "placed_at": t,
                    "currency": "EUR",
                    "total_minor": int(rng.gamma(6, 1 / nu) * 100),
                    "status": "completed",
                }
            )
            if rng.random() < p:
                break
            t += timedelta(days=float(rng.exponential(1 / lam)))
    session.execute(insert(Order), rows)
    session.flush()


def test_clv_fit_reports_b2b_and_b2c_separately(session, workspace) -> None:
    ws = workspace.id
    rng = np.random.default_rng(11)
    company = Company(workspace_id=ws, name="Tukku Oy", name_lower="tukku oy", domain="tukku.example.fi")
    session.add(company)
    session.flush()
    # Companies buy about three times as often as individuals.
    _customers(session, ws, 200, rng, b2b=None, company_id=company.id, rate_scale=35.0)
    _customers(session, ws, 150, rng, b2b="B2B", company_id=None, rate_scale=35.0)
    _customers(session, ws, 400, rng, b2b="B2C", company_id=None, rate_scale=110.0)
    session.commit()
    res = service.fit_clv(session, ws, as_of=date(2025, 6, 30))
    b2b, b2c = res["segments"]["B2B"], res["segments"]["B2C"]
    assert (b2b["customers"], b2c["customers"]) == (350, 400)
    assert b2b["orders"] + b2c["orders"] == res["orders"]
    assert b2b["converged"] and b2c["converged"], (b2b["reason"], b2c["reason"], b2b["bg_nbd"], b2c["bg_nbd"])
    rate = {k: v["bg_nbd"]["r"] / v["bg_nbd"]["alpha"] for k, v in (("B2B", b2b), ("B2C", b2c))}
    assert rate["B2B"] > 2 * rate["B2C"]  # the simulated ratio is about 3
    total = b2b["workspace_fit_clv_12m_total_minor"] + b2c["workspace_fit_clv_12m_total_minor"]
    assert abs(total - res["predicted_clv_12m_total_minor"]) <= 2
    assert res["segments"] == service.last_clv_fit(session, ws)["segments"]


def test_clv_segment_without_customers_says_so(session, workspace) -> None:
    ws = workspace.id
    _customers(session, ws, 30, np.random.default_rng(2), b2b="B2C", company_id=None, rate_scale=50.0)
    session.commit()
    res = service.fit_clv(session, ws, as_of=date(2025, 6, 30))
    assert res["segments"]["B2B"] == {
        "customers": 0,
        "insufficient_data": True,
        "reason": "no B2B customers with orders",
    }
    assert res["segments"]["B2C"]["customers"] == 30
