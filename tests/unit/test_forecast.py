"""Forecast, velocity and conversion math on hand-worked numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from suppilo.engine import forecast as fc

EXP = {"EUR": 2, "USD": 2, "SEK": 2, "JPY": 0}
STAGES = [
    fc.StageOrder("qualification", 10, "open"),
    fc.StageOrder("demo", 20, "open"),
    fc.StageOrder("proposal", 30, "open"),
    fc.StageOrder("won", 40, "won"),
    fc.StageOrder("lost", 50, "lost"),
]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def deal(amount: int, currency: str, probability: int, month: str | None, owner: int | None, stage: str = "demo"):
    return fc.ForecastDeal(amount, currency, probability, month, owner, stage)


def test_weighted_rounds_half_up_and_checks_probability() -> None:
    assert fc.weighted(10_000, 40) == 4_000
    assert fc.weighted(1_005, 50) == 503  # 502.5 → 503
    assert fc.weighted(333, 10) == 33  # 33.3 → 33
    with pytest.raises(ValueError):
        fc.weighted(100, 101)


def test_convert_uses_major_units_and_exponents() -> None:
    rates = {"USD": Decimal("0.9"), "JPY": Decimal("0.0062")}
    assert fc.convert(10_000, "USD", "EUR", rates, EXP) == 9_000  # 100.00 USD → 90.00 EUR
    assert fc.convert(10_000, "JPY", "EUR", rates, EXP) == 6_200  # ¥10,000 → 62.00 EUR
    assert fc.convert(500, "EUR", "EUR", rates, EXP) == 500
    assert fc.convert(500, "SEK", "EUR", rates, EXP) is None


def test_forecast_by_month_weighted_commit_best_case_and_unconverted_currency() -> None:
    deals = [
        deal(100_000, "EUR", 40, "2026-03", 1),  # weighted 40,000
        deal(50_000, "EUR", 80, "2026-03", 2),  # weighted 40,000, commit
        deal(20_000, "USD", 60, "2026-03", 1),  # 18,000 EUR at 0.9 → weighted 10,800
        deal(30_000, "SEK", 10, "2026-03", 1),  # no rate: stays SEK, weighted 3,000
        deal(10_000, "EUR", 90, "2026-04", 1),  # weighted 9,000, commit
        deal(7_000, "EUR", 20, None, None),
    ]
    groups = fc.forecast(deals, "month", "EUR", {"USD": Decimal("0.9")}, EXP)
    assert [g.key for g in groups] == ["2026-03", "2026-04", None]
    march = groups[0].totals
    assert set(march) == {"EUR", "SEK"}
    eur = march["EUR"]
    assert (eur.count, eur.best_case_minor, eur.weighted_minor, eur.commit_minor) == (3, 168_000, 90_800, 50_000)
    assert eur.converted is True
    sek = march["SEK"]
    assert (sek.count, sek.best_case_minor, sek.weighted_minor, sek.commit_minor, sek.converted) == (
        1,
        30_000,
        3_000,
        0,
        False,
    )
    april = groups[1].totals["EUR"]
    assert (april.best_case_minor, april.weighted_minor, april.commit_minor, april.converted) == (
        10_000,
        9_000,
        10_000,
        False,
    )
    assert groups[2].totals["EUR"].weighted_minor == 1_400


def test_forecast_counts_summed_rows() -> None:
    rows = [deal(100_000, "EUR", 40, "2026-03", 1), fc.ForecastDeal(30_000, "EUR", 80, "2026-03", 1, "demo", count=3)]
    eur = fc.forecast(rows, "month", "EUR", {}, EXP)[0].totals["EUR"]
    assert (eur.count, eur.best_case_minor, eur.weighted_minor, eur.commit_minor) == (4, 130_000, 64_000, 30_000)


def test_forecast_by_owner_and_stage() -> None:
    deals = [
        deal(100_000, "EUR", 40, "2026-03", 1, "demo"),
        deal(50_000, "EUR", 80, "2026-03", 2, "proposal"),
        deal(10_000, "EUR", 40, "2026-04", 1, "demo"),
    ]
    by_owner = fc.forecast(deals, "owner", "EUR", {}, EXP)
    assert [(g.key, g.totals["EUR"].weighted_minor) for g in by_owner] == [("1", 44_000), ("2", 40_000)]
    by_stage = fc.forecast(deals, "stage", "EUR", {}, EXP)
    assert [(g.key, g.totals["EUR"].count, g.totals["EUR"].commit_minor) for g in by_stage] == [
        ("demo", 2, 0),
        ("proposal", 1, 50_000),
    ]
    with pytest.raises(ValueError):
        fc.forecast(deals, "region", "EUR", {}, EXP)


def visits(*steps: tuple[str, float]) -> list[tuple[str, float]]:
    return [(key, (T0 + timedelta(days=days)).timestamp()) for key, days in steps]


def test_velocity_averages_completed_stays_only() -> None:
    histories = [
        visits(("qualification", 0), ("demo", 2), ("won", 12)),  # qualification 2 d, demo 10 d
        visits(("qualification", 0), ("demo", 4), ("lost", 8)),  # qualification 4 d, demo 4 d
        visits(("qualification", 0), ("demo", 3)),  # qualification 3 d; demo still running: not counted
    ]
    out = {v.stage_key: v for v in fc.velocity(histories, STAGES)}
    assert list(out) == ["qualification", "demo", "proposal"]
    assert (out["qualification"].stays, out["qualification"].average_days) == (3, 3.0)
    assert (out["demo"].stays, out["demo"].average_days) == (2, 7.0)
    assert (out["proposal"].stays, out["proposal"].average_days) == (0, None)


def test_conversion_counts_deals_that_went_further_but_not_lost() -> None:
    histories = [
        ["qualification", "demo", "proposal", "won"],
        ["qualification", "demo", "lost"],
        ["qualification", "lost"],
        ["qualification", "proposal"],  # skipped demo: advanced from qualification, never entered demo
        ["qualification", "demo", "qualification", "lost"],  # moved back: qualification counted once, advanced
    ]
    out = {c.stage_key: c for c in fc.conversion(histories, STAGES)}
    assert (out["qualification"].entered, out["qualification"].advanced, out["qualification"].rate) == (5, 4, 0.8)
    assert (out["demo"].entered, out["demo"].advanced, out["demo"].rate) == (3, 1, 0.3333)
    assert (out["proposal"].entered, out["proposal"].advanced, out["proposal"].rate) == (2, 1, 0.5)


def test_stall_threshold_is_twice_the_average_stay_with_a_floor() -> None:
    assert fc.stall_threshold(6.0) == 12.0
    assert fc.stall_threshold(0.2) == 1.0
    assert fc.stall_threshold(None) is None
    assert fc.stall_threshold(3.0, factor=1.5) == 4.5
