"""Exchange rates, spend import and the spend report (CPL, CPQL, CAC, ROI, ROAS) with worked-out numbers."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from suppilo.analytics import service
from suppilo.analytics.rates import MissingRate, RateBook, rate_book
from suppilo.analytics.schemas import SpendCreate
from suppilo.contacts.models import Contact

from .builders import contact

RATES_CSV = "date,currency,rate_to_eur\n2025-01-01,SEK,0.08\n2025-03-15,SEK,0.1\n2025-01-01,JPY,0.0062\nbad,SEK,1\n"
SPEND_CSV = (
    "date,channel,campaign,amount,currency\n"
    "2025-03-10,paid_search,spring,100.00,EUR\n"
    "2025-03-20,paid_search,spring,1000,SEK\n"
    "2025-03-05,paid_social,,500,SEK\n"
    "2025-04-01,paid_search,spring,999,EUR\n"
    "2025-03-06,paid_social,,12.345,EUR\n"
)


def test_rate_book_uses_latest_rate_on_or_before_and_names_missing() -> None:
    book = RateBook(
        "EUR", [(date(2025, 1, 1), "SEK", "EUR", Decimal("0.08")), (date(2025, 3, 15), "SEK", "EUR", Decimal("0.1"))]
    )
    assert book.convert(100_000, "SEK", "EUR", date(2025, 3, 14)) == 8_000  # 1000 SEK * 0.08
    assert book.convert(100_000, "SEK", "EUR", date(2025, 3, 15)) == 10_000
    assert book.convert(10_000, "EUR", "SEK", date(2025, 3, 20)) == 100_000  # inverse pair
    assert book.convert(5, "EUR", "EUR", date(2000, 1, 1)) == 5
    with pytest.raises(MissingRate, match=r"SEK->EUR on or before 2024-12-31"):
        book.convert(100, "SEK", "EUR", date(2024, 12, 31))
    with pytest.raises(MissingRate, match=r"NOK->EUR"):
        book.convert(100, "NOK", "EUR", date(2025, 3, 1))


def test_rates_csv_and_currency_exponents(session, workspace) -> None:
    n, errors = service.import_rates_csv(session, workspace.id, RATES_CSV)
    assert n == 3 and errors == [{"line": 5, "message": "Invalid isoformat string: 'bad'"}]
    book = rate_book(session, workspace.id)
    assert book.convert(10_000, "JPY", "EUR", date(2025, 2, 1)) == 6_200  # 10000 yen (no minor unit) = 62.00 EUR
    assert book.convert(100_000, "SEK", "JPY", date(2025, 2, 1)) == 12_903  # cross through EUR: 80 / 0.0062
    with pytest.raises(Exception, match="rate_to_eur"):
        service.import_rates_csv(session, workspace.id, "date,currency,rate_to_usd\n")


def _scenario(session, ws: int) -> int:
    service.import_rates_csv(session, ws, RATES_CSV)
    n, errors = service.import_spend_csv(session, ws, SPEND_CSV)
    assert n == 4 and errors[0]["line"] == 6 and "decimals" in errors[0]["message"]
    # c1: paid_search lead + qualified in March, first order 1000 SEK on 03-10 (0.08: 80 EUR) and 20 EUR on 03-20.
    c1 = contact(
        session,
        ws,
        "paid_search",
        campaign="spring",
        stages=[("interest", "2025-03-02"), ("consideration", "2025-03-05"), ("customer", "2025-03-10")],
        orders=[
            ("2025-03-10", 100_000, "SEK"),
            ("2025-03-20", 2_000, "EUR"),
            ("2025-03-21", 9_999, "EUR", "cancelled"),
        ],
    )
    # c2: paid_search lead only.
    contact(session, ws, "paid_search", campaign="spring", stages=[("interest", "2025-03-03")])
    # c3: lead in February (not counted), qualified in March (counted).
    contact(session, ws, "paid_search", stages=[("interest", "2025-02-20"), ("consideration", "2025-03-04")])
    # c4: paid_social lead; first order was in February, so not a new customer in March.
    contact(
        session,
        ws,
        "paid_social",
        stages=[("interest", "2025-03-06")],
        orders=[("2025-02-01", 5_000, "EUR"), ("2025-03-07", 5_000, "EUR")],
    )
    return c1


def test_spend_report_by_channel_with_conversion(session, workspace, other_workspace) -> None:
    c1 = _scenario(session, workspace.id)
    session.get(Contact, c1).properties = {"predicted_clv_12m": 30_000}  # as a CLV fit writes it
    session.flush()
    service.add_spend(
        session,
        other_workspace.id,
        SpendCreate(date=date(2025, 3, 10), channel="paid_search", amount_minor=1, currency="EUR"),
    )
    rep = service.spend_report(session, workspace.id, date(2025, 3, 1), date(2025, 3, 31), "channel")
    assert rep["currency"] == "EUR" and not rep["insufficient_data"]
    rows = {r["channel"]: r for r in rep["rows"]}
    assert set(rows) == {"paid_search", "paid_social"}
    ps = rows["paid_search"]
    # 100.00 EUR + 1000 SEK at 0.1 (rate of 03-15 applies on 03-20) = 200.00 EUR
    assert ps["spend_minor"] == 20_000
    assert (ps["leads"], ps["qualified_leads"], ps["new_customers"]) == (2, 2, 1)
    assert ps["revenue_minor"] == 8_000 + 2_000  # SEK order at the 03-10 rate 0.08, the cancelled order left out
    assert ps["cost_per_lead_minor"] == 10_000 and ps["cost_per_qualified_lead_minor"] == 10_000
    assert ps["cac_minor"] == 20_000
    assert ps["roi"] == pytest.approx(-0.5) and ps["roas"] == pytest.approx(0.5)
    assert ps["avg_predicted_clv_12m_minor"] == 30_000 and ps["ltv_cac"] == pytest.approx(1.5)
    social = rows["paid_social"]
    assert social["spend_minor"] == 4_000  # 500 SEK at 0.08
    assert (social["leads"], social["new_customers"], social["cac_minor"]) == (1, 0, None)
    assert "no new customers: CAC undefined" in social["notes"]
    assert rep["totals"]["spend_minor"] == 24_000 and rep["totals"]["leads"] == 3

    camp = service.spend_report(session, workspace.id, date(2025, 3, 1), date(2025, 3, 31), "campaign")
    keyed = {(r["channel"], r["campaign"]): r for r in camp["rows"]}
    assert keyed[("paid_search", "spring")]["leads"] == 2
    assert keyed[("paid_search", "(none)")]["qualified_leads"] == 1
    month = service.spend_report(session, workspace.id, date(2025, 3, 1), date(2025, 4, 30), "month")
    keyed = {(r["month"], r["channel"]): r for r in month["rows"]}
    assert keyed[("2025-04", "paid_search")]["spend_minor"] == 99_900
    assert keyed[("2025-03", "paid_search")]["spend_minor"] == 20_000


def test_spend_report_names_a_missing_rate(session, workspace) -> None:
    service.add_spend(
        session, workspace.id, SpendCreate(date=date(2025, 3, 10), channel="display", amount_minor=500, currency="NOK")
    )
    with pytest.raises(MissingRate, match=r"NOK->EUR on or before 2025-03-10"):
        service.spend_report(session, workspace.id, date(2025, 3, 1), date(2025, 3, 31), "channel")


def test_spend_report_on_empty_workspace(session, workspace) -> None:
    rep = service.spend_report(session, workspace.id, date(2025, 3, 1), date(2025, 3, 31), "channel")
    assert rep["insufficient_data"] and rep["rows"] == [] and rep["reason"]
    assert rep["totals"]["cac_minor"] is None and rep["totals"]["roi"] is None
