"""Funnels, attribution, cohorts and experiments over small hand-built data with worked-out answers."""

from __future__ import annotations

import math
from datetime import date

import pytest

from suppilo.analytics import service
from suppilo.engine.attribution import MODELS
from suppilo.errors import DomainError

from .builders import contact, event

MARCH = (date(2025, 3, 1), date(2025, 3, 31))


def _attribution_data(session, ws: int) -> None:
    service.import_rates_csv(session, ws, "date,currency,rate_to_eur\n2025-01-01,SEK,0.08\n")
    # Converts on 03-10 (1000 SEK = 80 EUR) after paid_search then email; the later social touch is not on the path.
    contact(
        session,
        ws,
        "paid_search",
        touches=[("paid_search", "2025-03-01", "spring"), ("email", "2025-03-08"), ("paid_social", "2025-03-15")],
        orders=[("2025-03-10", 100_000, "SEK"), ("2025-03-25", 1_000, "EUR")],
    )
    # Converts on 03-12 (50 EUR) after one organic touch.
    contact(
        session, ws, "organic_search", touches=[("organic_search", "2025-03-02")], orders=[("2025-03-12", 5_000, "EUR")]
    )
    # A non-converting path.
    contact(session, ws, "paid_search", touches=[("paid_search", "2025-03-03", "spring")])
    # An earlier customer: left out entirely.
    contact(session, ws, "email", touches=[("email", "2025-03-04")], orders=[("2025-01-04", 5_000, "EUR")])


def test_attribution_six_models_credit_every_conversion(session, workspace, other_workspace) -> None:
    _attribution_data(session, workspace.id)
    contact(
        session, other_workspace.id, "display", touches=[("display", "2025-03-05")], orders=[("2025-03-06", 1, "EUR")]
    )
    rep = service.attribution_report(session, workspace.id, *MARCH, "channel")
    assert (rep["paths"], rep["conversions"], rep["revenue_minor"]) == (3, 2, 13_000)
    assert set(rep["models"]) == set(MODELS)
    for model in MODELS:
        credits = rep["models"][model]["credits"]
        assert sum(c["conversions"] for c in credits) == pytest.approx(2.0), model
        assert sum(c["revenue"] for c in credits) == pytest.approx(13_000.0), model
        assert "display" not in {c["key"] for c in credits}
    first = {c["key"]: c for c in rep["models"]["first_touch"]["credits"]}
    assert first["paid_search"]["revenue"] == pytest.approx(8_000) and first["organic_search"]["conversions"] == 1
    last = {c["key"]: c["conversions"] for c in rep["models"]["last_touch"]["credits"]}
    assert last.get("email") == 1 and last.get("organic_search") == 1 and not last.get("paid_social")
    linear = {c["key"]: c["conversions"] for c in rep["models"]["linear"]["credits"]}
    assert linear["paid_search"] == pytest.approx(0.5) and linear["email"] == pytest.approx(0.5)
    side = {r["key"]: r for r in rep["side_by_side"]}
    assert side["email"]["last_touch"]["revenue_minor"] == 8_000
    camp = service.attribution_report(session, workspace.id, *MARCH, "campaign")
    keys = {c["key"] for c in camp["models"]["first_touch"]["credits"]}
    assert "spring" in keys


def test_attribution_empty_says_so(session, workspace) -> None:
    rep = service.attribution_report(session, workspace.id, *MARCH, "channel")
    assert rep["insufficient_data"] and "no first orders" in rep["reason"]
    assert all(m["total_conversions"] == 0 for m in rep["models"].values())


def test_stage_funnel_counts_and_groups(session, workspace) -> None:
    ws = workspace.id
    contact(
        session,
        ws,
        "email",
        country="FI",
        region="Uusimaa",
        stages=[("interest", "2025-03-01"), ("consideration", "2025-03-03"), ("customer", "2025-03-07")],
    )
    contact(session, ws, "email", country="SE", stages=[("interest", "2025-03-02")])
    contact(
        session, ws, "paid_search", country="FI", stages=[("interest", "2025-03-02"), ("consideration", "2025-03-04")]
    )
    contact(session, ws, "paid_search", country="FI", stages=[("interest", "2025-01-02")])  # no change in March
    rep = service.funnel_report(session, ws, *MARCH, "channel", min_contacts=1)
    stages = {s["stage"]: s for s in rep["all"]["stages"]}
    assert rep["all"]["contacts"] == 3
    assert (stages["interest"]["reached"], stages["consideration"]["reached"], stages["customer"]["reached"]) == (
        3,
        2,
        1,
    )
    assert stages["interest"]["conversion_to_next"] == pytest.approx(2 / 3)
    assert stages["consideration"]["median_seconds_in_stage"] == pytest.approx(4 * 86_400)  # the one completed stay
    assert stages["consideration"]["completed_stays"] == 1
    assert set(rep["groups"]) == {"email", "paid_search"}
    by_country = service.funnel_report(session, ws, *MARCH, "country", min_contacts=1)
    assert by_country["groups"]["FI"]["contacts"] == 2
    by_region = service.funnel_report(session, ws, *MARCH, "region", min_contacts=1)
    assert by_region["groups"]["Uusimaa"]["contacts"] == 1 and by_region["groups"]["(unknown)"]["contacts"] == 2
    tiny = service.funnel_report(session, ws, *MARCH)  # default minimum of contacts
    assert tiny["all"]["insufficient_data"] and tiny["all"]["reason"]


def test_ordered_event_funnel_with_pages(session, workspace) -> None:
    ws = workspace.id
    a = contact(session, ws, "email")
    b = contact(session, ws, "email")
    c = contact(session, ws, "email")
    event(session, ws, a, "2025-03-01", 9, "Pricing", path="/pricing")
    event(session, ws, a, "2025-03-02", 9, "Form Submitted")
    event(session, ws, b, "2025-03-01", 9, "Pricing", path="/pricing")
    event(session, ws, b, "2025-03-20", 9, "Form Submitted")  # outside a 7-day window
    event(session, ws, c, "2025-03-02", 9, "Form Submitted")  # wrong order
    event(session, ws, c, "2025-03-03", 9, "Pricing", path="/pricing")
    rep = service.event_funnel_report(session, ws, ["page:/pricing", "Form Submitted"], 7, *MARCH, min_contacts=1)
    assert [s["count"] for s in rep["steps"]] == [3, 1]
    assert rep["steps"][1]["median_seconds_from_previous"] == pytest.approx(86_400)
    with pytest.raises(DomainError) as err:
        service.event_funnel_report(session, ws, ["page:", "x"], 7, *MARCH)
    assert err.value.field == "steps.0"


def test_cohort_grid(session, workspace) -> None:
    ws = workspace.id
    contact(
        session,
        ws,
        "email",
        orders=[("2025-01-10", 100, "EUR"), ("2025-02-05", 100, "EUR"), ("2025-04-01", 100, "EUR")],
    )
    contact(session, ws, "email", orders=[("2025-01-20", 100, "EUR")])
    contact(session, ws, "paid_search", orders=[("2025-02-02", 100, "EUR"), ("2025-02-20", 100, "EUR")])
    rep = service.cohort_report(session, ws, date_to=date(2025, 4, 30))
    rows = {r["cohort"]: r for r in rep["cohorts"]}
    assert rows["2025-01"]["customers"] == 2
    assert rows["2025-01"]["retention"] == [1.0, 0.5, 0.0, 0.5]
    assert rows["2025-01"]["repeat"] == [0.0, 0.5, 0.5, 0.5]
    assert rows["2025-02"]["retention"] == [1.0, 0.0, 0.0] and rows["2025-02"]["repeat"] == [1.0, 1.0, 1.0]
    only = service.cohort_report(session, ws, channel="paid_search", date_to=date(2025, 4, 30))
    assert [r["cohort"] for r in only["cohorts"]] == ["2025-02"]
    none = service.cohort_report(session, ws, channel="display", date_to=date(2025, 4, 30))
    assert none["insufficient_data"] and "display" in none["reason"]


def test_experiment_against_hand_computed_values() -> None:
    rep = service.experiment_report([("A", 100, 1000), ("B", 130, 1000)], "A")
    # Pooled two-proportion z test worked out by hand.
    p = 230 / 2000
    z = 0.03 / math.sqrt(p * (1 - p) * (2 / 1000))
    p_value = math.erfc(z / math.sqrt(2))
    two = rep["comparisons"][0]["two_proportion"]
    assert two["z"] == pytest.approx(z, rel=1e-6) and two["p_value"] == pytest.approx(p_value, rel=1e-6)
    arms = {a["name"]: a for a in rep["bayesian"]["arms"]}
    assert 0.95 < arms["B"]["chance_to_beat_control"] < 0.995
    assert arms["B"]["expected_loss"] < arms["A"]["expected_loss"]
    assert 0 <= rep["comparisons"][0]["sequential"]["p_value"] <= 1
    with pytest.raises(DomainError) as err:
        service.experiment_report([("A", 1, 10), ("B", 11, 10)], "A")
    assert err.value.field == "arms.1.conversions"
    with pytest.raises(DomainError):
        service.experiment_report([("A", 1, 10), ("B", 1, 10)], "C")


def test_sample_size_formula() -> None:
    p1, p2 = 0.10, 0.12
    za, zb = 1.959963984540054, 0.8416212335729143
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p2 - p1) ** 2
    assert service.sample_size(0.1, 0.02)["per_arm"] == math.ceil(n)
    with pytest.raises(DomainError):
        service.sample_size(0.99, 0.05)


def test_sequential_test_over_earlier_looks() -> None:
    history = {"A": [(10, 100), (50, 500)], "B": [(12, 100), (65, 500)]}
    rep = service.experiment_report([("A", 100, 1000), ("B", 130, 1000)], "A", history=history)
    seq = rep["comparisons"][0]["sequential"]
    assert len(seq["p_values"]) == 3
    assert seq["p_values"] == sorted(seq["p_values"], reverse=True)  # always-valid p-values never rise
    single = service.experiment_report([("A", 100, 1000), ("B", 130, 1000)], "A")["comparisons"][0]["sequential"]
    assert seq["p_values"][-1] <= single["p_value"]
    with pytest.raises(DomainError) as err:
        service.experiment_report([("A", 100, 1000), ("B", 130, 1000)], "A", history={"A": [(1, 10)]})
    assert err.value.field == "arms"
