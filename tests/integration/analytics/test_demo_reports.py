"""Every report over a small demo business (300 contacts, currencies EUR/SEK/DKK/NOK/USD) through the API."""

from __future__ import annotations

import secrets
from datetime import date

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.analytics import service
from suppilo.commerce.models import Order
from suppilo.contacts.models import Contact
from suppilo.db.session import unit_of_work
from suppilo.demo import loader
from suppilo.demo.catalog import FX_PER_EUR
from suppilo.demo.generator import DemoParams
from suppilo.demo.params import CHANNEL_CPC_EUR
from suppilo.workspaces import service as workspaces_service

PARAMS = DemoParams(seed=5, contacts=300, today=date(2025, 6, 1))
YEAR = {"from": "2024-06-01", "to": "2025-05-31"}


@pytest.fixture(scope="module")
def demo(db_engine: Engine, session_factory: sessionmaker[Session]) -> tuple[int, str]:
    with unit_of_work(session_factory) as s:
        setup = loader.setup_workspace(s, PARAMS, f"demo-{secrets.token_hex(4)}")
    result = loader.load_data(db_engine, setup.workspace_id, PARAMS)
    with unit_of_work(session_factory) as s:
        loader.mark_complete(s, setup.workspace_id, PARAMS, result)
        ws = setup.workspace_id
        rates = "date,currency,rate_to_eur\n" + "".join(
            f"2020-01-01,{c},{1 / fx:.12f}\n" for c, fx in FX_PER_EUR.items() if c != "EUR"
        )
        assert service.import_rates_csv(s, ws, rates) == (4, [])
        spend = "date,channel,campaign,amount,currency\n" + "".join(
            f"2025-03-01,{ch},,{cpc * 1000:.2f},EUR\n" for ch, cpc in CHANNEL_CPC_EUR.items() if cpc
        )
        service.import_spend_csv(s, ws, spend)
        key = workspaces_service.create_api_key(s, ws, scopes=["admin"])[1]
    return ws, key


def test_reports_over_the_demo(client, demo, session) -> None:
    ws, key = demo
    h = {"Authorization": f"Bearer {key}"}
    spend = client.get("/api/v1/reports/spend", params=YEAR, headers=h).json()
    assert not spend["insufficient_data"]
    rows = {r["channel"]: r for r in spend["rows"]}
    ps = rows["paid_search"]
    assert ps["spend_minor"] == round(CHANNEL_CPC_EUR["paid_search"] * 1000 * 100)
    assert ps["new_customers"] > 0 and ps["cac_minor"] == round(ps["spend_minor"] / ps["new_customers"])
    assert ps["roas"] == pytest.approx(ps["revenue_minor"] / ps["spend_minor"])

    funnel = client.get("/api/v1/reports/funnel", params={**YEAR, "group_by": "channel"}, headers=h).json()
    assert not funnel["all"]["insufficient_data"]
    reached = [s["reached"] for s in funnel["all"]["stages"]]
    assert reached == sorted(reached, reverse=True) and reached[4] > 0  # customers

    att = client.get("/api/v1/reports/attribution", params=YEAR, headers=h).json()
    firsts = (
        select(func.min(Order.placed_at).label("t"))
        .where(Order.workspace_id == ws, Order.contact_id.is_not(None), Order.status != "cancelled")
        .group_by(Order.contact_id)
        .subquery()
    )
    all_first_orders = session.scalar(select(func.count()).select_from(firsts))
    session.rollback()  # SQLite: release the lock before the API writes
    assert 0 < att["conversions"] <= all_first_orders
    for model in att["models"].values():
        attributed = sum(c["conversions"] for c in model["credits"]) + model["unattributed_conversions"]
        assert attributed == pytest.approx(att["conversions"])

    ef = client.post(
        "/api/v1/reports/event-funnel",
        json={"steps": ["Product Added", "Order Completed"], "window_days": 30, **YEAR},
        headers=h,
    ).json()
    assert ef["steps"][0]["count"] >= ef["steps"][1]["count"] > 0

    fit = client.post("/api/v1/reports/clv/fit", json={"as_of": "2025-05-31", "holdout_days": 90}, headers=h).json()
    customers = session.scalar(
        select(func.count(func.distinct(Order.contact_id))).where(
            Order.workspace_id == ws, Order.status.in_(("completed", "partially_refunded"))
        )
    )
    session.rollback()
    assert fit["customers"] == customers == fit["written_contacts"]
    assert fit["holdout"]["customers"] > 0
    tiers = session.scalars(select(Contact.properties["clv_tier"].as_string()).where(Contact.workspace_id == ws)).all()
    session.rollback()
    assert sum(t is not None for t in tiers) == customers
    assert client.get("/api/v1/reports/clv", headers=h).json()["customers"] == customers
    after = client.get("/api/v1/reports/spend", params=YEAR, headers=h).json()
    ltv = {r["channel"]: r for r in after["rows"]}["paid_search"]
    assert ltv["ltv_cac"] == pytest.approx(ltv["avg_predicted_clv_12m_minor"] / ltv["cac_minor"])

    cohorts = client.get("/api/v1/reports/cohorts", params={"to": "2025-05-31"}, headers=h).json()
    assert sum(r["customers"] for r in cohorts["cohorts"]) == customers
    assert all(r["retention"][0] == 1.0 for r in cohorts["cohorts"])


def test_new_reports_over_the_demo(client, demo) -> None:
    _ws, key = demo
    h = {"Authorization": f"Bearer {key}"}
    trends = client.get("/api/v1/reports/funnel-trends", params={**YEAR, "interval": "month"}, headers=h).json()
    assert len(trends["periods"]) == 12 and sum(p["contacts"] for p in trends["periods"]) > 0
    assert any(v is not None for series in trends["series"].values() for v in series)
    svg = client.get("/api/v1/reports/funnel-trends", params={**YEAR, "format": "svg"}, headers=h)
    assert svg.headers["content-type"].startswith("image/svg+xml") and "<title" in svg.text
    body = {"steps": ["Product Added", "Order Completed"], "window_days": 30, **YEAR}
    sql = client.post("/api/v1/reports/event-funnel", json={**body, "engine": "sql"}, headers=h).json()
    col = client.post("/api/v1/reports/event-funnel", json={**body, "engine": "columnar"}, headers=h).json()
    assert sql["steps"] == col["steps"] and sql["steps"][1]["count"] > 0
    q = {"by": "month", "to": "2025-05-31"}
    a = client.get("/api/v1/reports/event-cohorts", params={**q, "engine": "sql"}, headers=h).json()
    b = client.get("/api/v1/reports/event-cohorts", params={**q, "engine": "columnar"}, headers=h).json()
    assert a["cohorts"] and a["cohorts"] == b["cohorts"]
    by_country = client.get("/api/v1/reports/spend", params={**YEAR, "group_by": "country"}, headers=h).json()
    assert sum(r["leads"] for r in by_country["rows"]) > 0
    att = client.get("/api/v1/reports/attribution", params={**YEAR, "format": "svg"}, headers=h)
    assert att.status_code == 200 and "aria-label" in att.text
    fit = client.post("/api/v1/reports/clv/fit", json={"as_of": "2025-05-31"}, headers=h).json()
    assert fit["segments"]["B2B"]["customers"] + fit["segments"]["B2C"]["customers"] == fit["customers"]
    assert client.get("/api/v1/reports/experiments/journeys", headers=h).status_code == 200
