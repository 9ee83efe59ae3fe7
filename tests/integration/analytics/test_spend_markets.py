"""Spend per market: spend rows carry a country and region; CPL, CAC and ROI per country or region × channel."""

from __future__ import annotations

from datetime import date

import pytest

from suppilo.analytics import service
from suppilo.analytics.schemas import SpendCreate
from suppilo.errors import DomainError

from .builders import contact

MARCH = (date(2025, 3, 1), date(2025, 3, 31))
CSV = (
    "date,channel,campaign,amount,currency,country,region\n"
    "2025-03-01,paid_search,spring,100.00,EUR,FI,Uusimaa\n"
    "2025-03-02,paid_search,spring,50.00,EUR,se,Stockholm\n"
    "2025-03-03,paid_search,,20.00,EUR,,\n"
    "2025-03-04,paid_search,,20.00,EUR,FIN,\n"
)


def test_spend_per_country_and_region(session, workspace) -> None:
    ws = workspace.id
    n, errors = service.import_spend_csv(session, ws, CSV)
    assert n == 3 and errors[0]["line"] == 5 and "country" in errors[0]["message"]
    service.add_spend(
        session,
        ws,
        SpendCreate(date=date(2025, 3, 5), channel="paid_search", amount_minor=5_000, currency="EUR", country="fi"),
    )
    for day in ("2025-03-02", "2025-03-03"):
        contact(session, ws, "paid_search", country="FI", region="Uusimaa", stages=[("interest", day)])
    contact(
        session,
        ws,
        "paid_search",
        country="FI",
        region="Uusimaa",
        stages=[("interest", "2025-03-04"), ("customer", "2025-03-09")],
        orders=[("2025-03-09", 30_000, "EUR")],
    )
    contact(session, ws, "paid_search", country="SE", region="Stockholm", stages=[("interest", "2025-03-05")])
    rep = service.spend_report(session, ws, *MARCH, "country")
    rows = {r["country"]: r for r in rep["rows"]}
    fi, se, unknown = rows["FI"], rows["SE"], rows["(unknown)"]
    assert (fi["spend_minor"], fi["leads"], fi["new_customers"], fi["revenue_minor"]) == (15_000, 3, 1, 30_000)
    assert fi["cost_per_lead_minor"] == 5_000 and fi["cac_minor"] == 15_000 and fi["roi"] == pytest.approx(1.0)
    assert (se["spend_minor"], se["leads"], se["cost_per_lead_minor"], se["cac_minor"]) == (5_000, 1, 5_000, None)
    assert unknown["spend_minor"] == 2_000 and unknown["leads"] == 0 and unknown["cost_per_lead_minor"] is None
    assert rep["totals"]["spend_minor"] == 22_000
    by_region = {r["region"]: r for r in service.spend_report(session, ws, *MARCH, "region")["rows"]}
    assert by_region["Uusimaa"]["spend_minor"] == 10_000 and by_region["Uusimaa"]["leads"] == 3
    assert by_region["(unknown)"]["spend_minor"] == 7_000  # the FI row sent through the API has no region
    with pytest.raises(DomainError):
        service.spend_report(session, ws, *MARCH, "city")


def test_api_spend_by_region(client, workspace) -> None:
    h = workspace.auth("write")
    r = client.post(
        "/api/v1/spend",
        json={"date": "2025-03-12", "channel": "email", "amount_minor": 900, "currency": "EUR", "country": "DE"},
        headers=h,
    )
    assert r.status_code == 201 and r.json()["country"] == "DE"
    bad = client.post(
        "/api/v1/spend",
        json={"date": "2025-03-12", "channel": "email", "amount_minor": 900, "currency": "EUR", "country": "Germany"},
        headers=h,
    )
    assert bad.status_code == 422
    rep = client.get(
        "/api/v1/reports/spend",
        params={"from": "2025-03-01", "to": "2025-03-31", "group_by": "country"},
        headers=workspace.auth("read"),
    ).json()
    assert rep["rows"][0]["country"] == "DE" and rep["rows"][0]["spend_minor"] == 900
