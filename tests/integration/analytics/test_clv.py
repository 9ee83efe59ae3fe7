"""CLV fit on simulated BG/NBD + Gamma-Gamma orders: properties written back, fit stored, tiny data fall back."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from suppilo.analytics import service
from suppilo.commerce.models import Order
from suppilo.contacts.models import Contact
from suppilo.errors import NotFound

from .builders import contact

AS_OF = date(2025, 6, 30)


def _simulate(session, ws: int, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    end = datetime(2025, 7, 1, tzinfo=UTC)
    contacts = [
        Contact(workspace_id=ws, email=f"c{i}-{ws}@example.fi", properties={"customer_type": "B2C"}) for i in range(n)
    ]
    session.add_all(contacts)
    session.flush()
    rows = []
    for c in contacts:
        lam = rng.gamma(0.9, 1 / 110.0)
        p = rng.beta(0.8, 3.2)
        nu = rng.gamma(3.5, 1 / 37.5)
        t = end - timedelta(days=float(rng.uniform(30, 540)))
        while t < end:
            # SEK orders for every fifth customer: 11.5 SEK per EUR from the rate table
            sek = c.id % 5 == 0
            value = rng.gamma(6, 1 / nu) * 100
            rows.append(
                {
                    "workspace_id": ws,
                    "external_id": f"sim-{c.id}-{len(rows)}",
                    "contact_id": c.id,
                    "placed_at": t,
                    "currency": "SEK" if sek else "EUR",
                    "total_minor": int(value * 11.5) if sek else int(value),
                    "status": "completed",
                }
            )
            if rng.random() < p:
                break
            t = t + timedelta(days=float(rng.exponential(1 / lam)))
    session.execute(Order.__table__.insert(), rows)
    session.flush()
    return [c.id for c in contacts]


def test_clv_fit_writes_properties_and_stores_fit(session, workspace, other_workspace) -> None:
    service.import_rates_csv(session, workspace.id, "date,currency,rate_to_eur\n2020-01-01,SEK,0.0869565217\n")
    ids = _simulate(session, workspace.id, 400, seed=3)
    other = contact(session, other_workspace.id, "email", orders=[("2025-01-01", 100, "EUR")])
    res = service.fit_clv(session, workspace.id, as_of=AS_OF, holdout_days=90)
    assert res["currency"] == "EUR" and res["customers"] == 400
    assert res["converged"], res["reasons"]
    assert res["fallback"] is None and not res["insufficient_data"]
    bg = res["bg_nbd"]
    assert 0.2 < bg["r"] < 4 and 0.05 < bg["a"] / (bg["a"] + bg["b"]) < 0.6
    assert res["written_contacts"] == 400
    assert sum(res["tiers"].values()) == 400 and min(res["tiers"].values()) >= 80
    hold = res["holdout"]
    assert hold["customers"] > 0 and hold["predicted_repeat_purchases"] > 0 and hold["buckets"]
    session.expire_all()
    contacts = session.scalars(select(Contact).where(Contact.id.in_(ids))).all()
    for c in contacts:
        props = c.properties
        assert props["customer_type"] == "B2C"  # existing properties kept
        assert 0 <= props["p_alive"] <= 1
        assert props["predicted_purchases_90d"] >= 0 and props["predicted_clv_12m"] >= 0
        assert props["clv_tier"] in "ABCD"
        assert c.version == 2
    best = max(contacts, key=lambda c: c.properties["predicted_clv_12m"])
    worst = min(contacts, key=lambda c: c.properties["predicted_clv_12m"])
    assert best.properties["clv_tier"] == "A" and worst.properties["clv_tier"] == "D"
    assert "p_alive" not in session.get(Contact, other).properties  # other workspace untouched
    last = service.last_clv_fit(session, workspace.id)
    assert last["bg_nbd"]["r"] == pytest.approx(bg["r"]) and last["customers"] == 400
    with pytest.raises(NotFound):
        service.last_clv_fit(session, other_workspace.id)


def test_clv_on_tiny_data_names_its_fallback(session, workspace) -> None:
    a = contact(session, workspace.id, "email", orders=[("2025-01-01", 5_000, "EUR"), ("2025-03-01", 7_000, "EUR")])
    contact(session, workspace.id, "email", orders=[("2025-02-01", 3_000, "EUR")])
    res = service.fit_clv(session, workspace.id, as_of=AS_OF)
    assert not res["converged"] and res["insufficient_data"]
    assert res["fallback"] == "historical_average" and "historical_average" in res["reason"]
    session.expire_all()
    props = session.get(Contact, a).properties
    assert props["p_alive"] is None  # P(alive) has no fallback
    assert props["predicted_purchases_90d"] > 0  # x / T * horizon


def test_clv_without_orders_and_missing_rate(session, workspace) -> None:
    res = service.fit_clv(session, workspace.id, as_of=AS_OF)
    assert res["insufficient_data"] and res["customers"] == 0 and "nothing to fit" in res["reason"]
    contact(session, workspace.id, "email", orders=[("2025-01-01", 5_000, "NOK")])
    with pytest.raises(Exception, match="NOK->EUR on or before 2025-01-01"):
        service.fit_clv(session, workspace.id, as_of=AS_OF)
