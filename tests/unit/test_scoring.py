"""Scoring math: ICP fit with explanations, engagement with decay and caps, the decayed comparison for filters."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suppilo.engine.filter_eval import ContactSnapshot, ScoreSnapshot, evaluate
from suppilo.engine.filters import FilterError, decay_key, decayed_compare, dependencies, epoch_seconds, parse_filter
from suppilo.engine.scoring import (
    DEFAULT_ENGAGEMENT,
    FitFacts,
    InsufficientHistory,
    PredictiveExample,
    ScoredEvent,
    ScoringError,
    _auc,
    add_points,
    apply_event,
    best_fit,
    decayed,
    engagement,
    fit,
    grade_for,
    icp_to_json,
    parse_engagement,
    parse_icp,
    percentile_grades,
    predict,
    train_predictive,
)

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

ICP = {
    "industries": {"values": ["Software", "E-commerce"], "weight": 20},
    "employees": {"min": 10, "max": 500, "weight": 15},
    "revenue": {"currency": "EUR", "min_minor": 100_000_000, "weight": 10},
    "location": {"countries": ["US"], "regions": ["nordics"], "weight": 15},
    "job_titles": {"keywords": ["marketing", "growth"], "weight": 15},
    "seniority": {"keywords": ["head", "director", "vp", "chief"], "weight": 10},
    "pain_points": {"tags": ["pain:attribution", "pain:churn"], "weight": 10},
    "budget": {"currency": "EUR", "min_minor": 500_000, "weight": 5},
}


def ideal() -> FitFacts:
    return FitFacts(
        industry=" software ",
        employees=120,
        revenue_minor=250_000_000,
        revenue_currency="EUR",
        country="fi",
        job_title="Head of Growth Marketing",
        tags=frozenset({"Pain:Churn"}),
        budget_minor=1_000_000,
        budget_currency="EUR",
    )


# --- ICP validation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [
        ({}, "", "give at least one criterion"),
        ({"employees": {"min": 500, "max": 10}}, "employees", "min must not be above max"),
        ({"employees": {"weight": 5}}, "employees", "give min, max or both"),
        ({"revenue": {"currency": "eur", "min_minor": 1}}, "revenue.currency", "String should match pattern"),
        ({"location": {"regions": ["mars"]}}, "location", "unknown region 'mars'"),
        ({"location": {"countries": ["Finland"]}}, "location", "not an ISO 3166 country code"),
        ({"industries": {"values": ["a"], "weight": -1}}, "industries.weight", "greater than or equal to 0"),
        ({"industries": {"values": ["a"], "weight": float("nan")}}, "industries.weight", "finite number"),
        ({"industries": {"values": ["a"], "weight": 0}}, "industries.weight", "must not all be 0"),
        ({"industries": {"values": []}}, "industries.values", "at least 1 item"),
        ({"industries": {"values": ["a"]}, "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"industries": {"values": ["a"]}, "grades": {"A": 50, "B": 60}}, "grades", "A ≥ B ≥ C"),
    ],
)
def test_invalid_icp_names_the_field(raw, path, reason):
    with pytest.raises(ScoringError) as exc:
        parse_icp(raw)
    assert exc.value.path == path
    assert reason in exc.value.reason


def test_icp_json_round_trips():
    icp = parse_icp(ICP)
    assert parse_icp(icp_to_json(icp)) == icp


# --- fit -------------------------------------------------------------------------------------------------------------


def test_ideal_contact_scores_100_grade_a_with_a_line_per_criterion():
    r = fit(parse_icp(ICP), ideal())
    assert r.score == 100.0
    assert r.grade == "A"
    assert [line.criterion for line in r.explanation] == [
        "industries",
        "employees",
        "revenue",
        "location",
        "job_titles",
        "seniority",
        "pain_points",
        "budget",
    ]
    assert all(line.matched and line.points == line.max_points for line in r.explanation)
    by = {line.criterion: line.detail for line in r.explanation}
    assert by["location"] == "country FI is in US, nordics"
    assert by["seniority"] == "seniority in the job title: 'Head of Growth Marketing' has 'head'"
    assert by["pain_points"] == "tagged pain:churn"


def test_missing_data_is_explained_and_not_matched():
    r = fit(parse_icp(ICP), FitFacts(country="SE", job_title="Chief Executive"))
    by = {line.criterion: line for line in r.explanation}
    assert by["employees"].detail == "employees unknown" and not by["employees"].matched
    assert by["industries"].detail == "industry unknown"
    assert by["revenue"].detail == "annual revenue unknown"
    assert by["budget"].detail == "budget unknown"
    assert by["location"].matched and by["seniority"].matched and not by["job_titles"].matched
    assert r.score == pytest.approx(100 * 25 / 100)
    assert r.grade == "D"


def test_partial_match_weights_and_grades():
    facts = FitFacts(industry="Retail", employees=5000, country="DE", job_title="VP Sales", tags=frozenset())
    r = fit(parse_icp(ICP), facts)
    assert r.score == 10.0  # only seniority (10 of 100)
    by = {line.criterion: line for line in r.explanation}
    assert by["employees"].detail == "5000 employees (outside 10–500)"
    assert by["industries"].detail == "industry 'Retail' is not one of Software, E-commerce"
    assert by["job_titles"].detail == "job title: 'VP Sales' has none of marketing, growth"


def test_keywords_match_whole_words_only():
    icp = parse_icp({"seniority": {"keywords": ["vp", "head"]}})
    assert fit(icp, FitFacts(job_title="Headhunter")).score == 0
    assert fit(icp, FitFacts(job_title="SVP / VP, Sales")).score == 100


def test_revenue_in_another_currency_converts_or_says_why_not():
    icp = parse_icp({"revenue": {"currency": "EUR", "min_minor": 100_000}})
    usd = FitFacts(revenue_minor=200_000, revenue_currency="USD")
    r = fit(icp, usd)
    assert not r.explanation[0].matched
    assert r.explanation[0].detail == "annual revenue 2,000.00 USD is in USD, and no USD→EUR rate is known"
    r = fit(icp, usd, convert=lambda amount, src, dst: round(amount * 0.9) if (src, dst) == ("USD", "EUR") else None)
    assert r.explanation[0].matched
    assert r.explanation[0].detail == (
        "annual revenue 1,800.00 EUR (converted from 2,000.00 USD) (within at least 1,000.00 EUR)"
    )


def test_custom_grade_bands_and_best_of_several_icps():
    strict = parse_icp({"industries": {"values": ["Software"]}, "grades": {"A": 100, "B": 100, "C": 100}})
    loose = parse_icp({"location": {"regions": ["eu"]}})
    assert fit(strict, FitFacts(industry="software")).grade == "A"
    assert fit(strict, FitFacts(industry="retail")).grade == "D"
    best = best_fit([(1, strict), (2, loose)], FitFacts(industry="retail", country="FR"))
    assert best is not None and best[0] == 2 and best[1].score == 100
    assert best_fit([], FitFacts()) is None


@pytest.mark.parametrize(("score", "grade"), [(100, "A"), (80, "A"), (79.99, "B"), (60, "B"), (40, "C"), (39.9, "D")])
def test_default_grade_bands(score, grade):
    assert grade_for(score) == grade


facts_strategy = st.builds(
    FitFacts,
    industry=st.none() | st.sampled_from(["Software", "retail", ""]),
    employees=st.none() | st.integers(0, 10_000),
    revenue_minor=st.none() | st.integers(0, 10**12),
    revenue_currency=st.none() | st.sampled_from(["EUR", "USD"]),
    country=st.none() | st.sampled_from(["FI", "US", "DE", "xx"]),
    job_title=st.none() | st.text(max_size=30),
    tags=st.frozensets(st.sampled_from(["pain:churn", "x", "PAIN:ATTRIBUTION"])),
    budget_minor=st.none() | st.integers(0, 10**8),
    budget_currency=st.none() | st.sampled_from(["EUR", "SEK"]),
)
weights = st.floats(0, 1000, allow_nan=False)


@given(facts=facts_strategy, w=st.lists(weights, min_size=8, max_size=8))
def test_fit_score_is_bounded_and_equals_weighted_share(facts, w):
    names = list(ICP)
    raw = {n: {**ICP[n], "weight": w[i]} for i, n in enumerate(names)}
    if sum(w) == 0:
        with pytest.raises(ScoringError):
            parse_icp(raw)
        return
    r = fit(parse_icp(raw), facts)
    assert 0.0 <= r.score <= 100.0
    assert r.score == pytest.approx(100 * sum(x.points for x in r.explanation) / sum(w), abs=0.01)
    assert sum(x.max_points for x in r.explanation) == pytest.approx(sum(w))
    assert r.grade == grade_for(r.score)


# --- engagement ----------------------------------------------------------------------------------------------------

CONFIG = parse_engagement(DEFAULT_ENGAGEMENT)


def ev(name: str, at: datetime, kind: str = "track", i: int = 0, **props: object) -> ScoredEvent:
    return ScoredEvent(name, kind, at, props, i)


def test_points_halve_every_half_life():
    r = engagement([ev("Form Submitted", NOW - 30 * DAY)], CONFIG, NOW)
    assert r.score == pytest.approx(5.0)
    assert r.contributions[0].rule == "form_submit"
    assert r.contributions[0].points == 10 and r.contributions[0].points_now == pytest.approx(5.0)
    assert engagement([ev("Form Submitted", NOW)], CONFIG, NOW).score == 10.0


def test_machine_opens_do_not_count_and_negative_rules_subtract():
    events = [
        ev("email_opened", NOW, machine=True),
        ev("email_opened", NOW, machine=False),
        ev("email_unsubscribed", NOW),
        ev("Careers", NOW, kind="page", path="/careers/engineer"),
        ev("Pricing", NOW, kind="page", path="/pricing"),
        ev("Form Submitted", NOW + DAY),  # after now: not counted
    ]
    r = engagement(events, CONFIG, NOW)
    # open 2, unsubscribe -15, two page views 1 + 1, careers -5
    assert r.score == pytest.approx(2 - 15 + 2 - 5)
    assert [c.rule for c in r.contributions][:2] == ["unsubscribe", "careers_page"]


def test_caps_count_the_first_events_of_each_period():
    day = datetime(2024, 6, 14, tzinfo=UTC)
    events = [ev("Page", day + timedelta(minutes=m), kind="page", i=m) for m in range(25)]
    events.append(ev("Page", day + DAY, kind="page", i=99))
    r = engagement(events, CONFIG, day + DAY)
    page = next(c for c in r.contributions if c.rule == "page_view")
    assert page.events == 11  # 10 on the first day, 1 on the next
    assert r.state["page_view"] == {
        str(int((day + DAY).timestamp() // 86400)): 1,
        str(int(day.timestamp() // 86400)): 10,
    }


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [
        ({"rules": [{"key": "a", "event": "x", "points": float("inf")}]}, "rules[0].points", "finite number"),
        ({"rules": [{"key": "a", "event": "x", "points": 1e9}]}, "rules[0].points", "less than or equal to 10000"),
        ({"rules": [{"key": "a", "points": 1}]}, "rules[0]", "give event, kind or both"),
        ({"rules": [{"key": "a", "event": "x", "points": 0}]}, "rules[0]", "points must not be 0"),
        ({"half_life_days": 0, "rules": []}, "", "half_life_days must be"),
        ({"half_life_days": float("nan"), "rules": []}, "half_life_days", "finite number"),
        ({"rules": [{"key": "a", "event": "x", "points": 1}, {"key": "a", "event": "y", "points": 1}]}, "", "unique"),
        (
            {"rules": [{"key": "a", "event": "x", "points": 1, "where": [{"path": "p", "op": "gt", "value": "z"}]}]},
            "rules[0].where[0].value",
            "a finite number is required",
        ),
    ],
)
def test_invalid_engagement_rules_are_refused_with_paths(raw, path, reason):
    with pytest.raises(ScoringError) as exc:
        parse_engagement(raw)
    assert exc.value.path == path
    assert reason in exc.value.reason


offsets = st.integers(0, 200 * 86_400)
event_strategy = st.builds(
    lambda name, off, machine, i: ScoredEvent(
        name, "page" if name == "Page" else "track", NOW - timedelta(seconds=off), {"machine": machine}, i
    ),
    st.sampled_from(["Page", "Form Submitted", "email_opened", "email_unsubscribed", "Order Completed", "x"]),
    offsets,
    st.booleans(),
    st.integers(0, 10**6),
)


@settings(max_examples=150)
@given(events=st.lists(event_strategy, max_size=40), half_life=st.sampled_from([1.0, 7.0, 30.0, 365.0]))
def test_incremental_in_time_order_equals_full_recomputation(events, half_life):
    config = parse_engagement({**DEFAULT_ENGAGEMENT, "half_life_days": half_life})
    full = engagement(events, config, NOW)
    score, as_of, state = 0.0, None, {}
    for e in sorted(events, key=lambda e: (e.at, e.id)):
        score, as_of, state, _ = apply_event(score, as_of, state, e, config)
    now_value = decayed(score, as_of, NOW, config.half_life) if as_of is not None else 0.0
    assert now_value == pytest.approx(full.score, rel=1e-9, abs=1e-9)


@given(
    points=st.lists(st.tuples(st.floats(-100, 100, allow_nan=False), offsets), max_size=20),
)
def test_add_points_in_any_order_equals_the_sum_of_decayed_points(points):
    hl = timedelta(days=30)
    score, as_of = 0.0, None
    for p, off in points:
        score, as_of = add_points(score, as_of, p, NOW - timedelta(seconds=off), hl)
    expected = sum(p * 2 ** (-(off / hl.total_seconds())) for p, off in points)
    got = decayed(score, as_of, NOW, hl) if as_of is not None else 0.0
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


@given(score=st.floats(-1e6, 1e6, allow_nan=False), a=offsets, b=offsets)
def test_decay_is_monotone_toward_zero(score, a, b):
    hl = timedelta(days=30)
    t0 = NOW - timedelta(days=400)
    early, late = sorted((t0 + timedelta(seconds=a), t0 + timedelta(seconds=b)))
    x, y = decayed(score, t0, early, hl), decayed(score, t0, late, hl)
    assert abs(y) <= abs(x) <= abs(score)
    assert math.copysign(1, x) == math.copysign(1, score) or x == 0


# --- decayed comparison (what the score filter uses) ------------------------------------------------------------


@given(
    score=st.sampled_from([-50.0, -3.0, -0.5, 0.0, 0.5, 3.0, 50.0]),
    age_days=st.floats(0, 120),
    value=st.sampled_from([-10.0, -1.0, 0.0, 0.25, 1.0, 2.0, 20.0]),
    op=st.sampled_from(["gt", "gte", "lt", "lte"]),
)
def test_decayed_compare_agrees_with_the_decayed_value(score, age_days, value, op):
    hl = 30 * 86_400.0
    as_of = NOW - timedelta(days=age_days)
    now_value = score * 2 ** (-(age_days * 86_400) / hl)
    if value != 0 and abs(abs(now_value) - abs(value)) < 1e-9 * abs(value):
        return  # on the boundary float rounding decides either way
    key = decay_key(score, as_of, hl)
    sign = (score > 0) - (score < 0)
    got = decayed_compare(sign, key, hl, op, value, epoch_seconds(NOW))
    expected = {"gt": now_value > value, "gte": now_value >= value, "lt": now_value < value, "lte": now_value <= value}
    assert got == expected[op]


def test_score_conditions_in_the_filter_language():
    hl = 30 * 86_400.0
    snap = ContactSnapshot(
        id=1,
        scores={
            "fit": ScoreSnapshot(72.5, "B"),
            "engagement": ScoreSnapshot(40.0, None, decay_key(40.0, NOW - timedelta(days=30), hl), hl),
        },
    )
    bare = ContactSnapshot(id=2)

    def m(raw, s=snap):
        return evaluate(parse_filter(raw), s, NOW, lambda _: False)

    assert m({"type": "score", "kind": "fit", "op": "gte", "value": 70})
    assert not m({"type": "score", "kind": "fit", "op": "gte", "value": 70}, bare)
    assert m({"type": "score", "kind": "fit", "op": "grade_in", "value": ["A", "B"]})
    assert not m({"type": "score", "kind": "fit", "op": "grade_in", "value": ["A"]})
    assert m({"type": "score", "kind": "fit", "op": "is_not_set"}, bare)
    # 40 points thirty days ago are 20 now
    assert m({"type": "score", "kind": "engagement", "op": "between", "value": [19.9, 20.1]})
    assert not m({"type": "score", "kind": "engagement", "op": "gt", "value": 20.1})
    # no engagement row: the score is 0
    assert m({"type": "score", "kind": "engagement", "op": "lt", "value": 1}, bare)
    assert not m({"type": "score", "kind": "engagement", "op": "gte", "value": 1}, bare)
    assert m({"type": "score", "kind": "predictive", "op": "is_not_set"})
    assert dependencies(parse_filter({"type": "score", "kind": "engagement", "op": "gt", "value": 1})) == {
        "score:engagement",
        "time",
    }
    assert dependencies(parse_filter({"type": "score", "kind": "fit", "op": "gt", "value": 1})) == {"score:fit"}


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [
        ({"type": "score", "kind": "fitness", "op": "gt", "value": 1}, "kind", "Input should be"),
        ({"type": "score", "kind": "engagement", "op": "grade_in", "value": ["A"]}, "op", "engagement score takes"),
        ({"type": "score", "kind": "fit", "op": "grade_in", "value": ["E"]}, "value", "grades A, B, C, D"),
        ({"type": "score", "kind": "fit", "op": "gt", "value": "high"}, "value", "a finite number is required"),
        ({"type": "score", "kind": "fit", "op": "between", "value": [5, 1]}, "value", "low must not be above high"),
        ({"type": "score", "kind": "engagement", "op": "gt", "value": 1e-9}, "value", "engagement threshold"),
        ({"type": "score", "kind": "fit", "op": "is_set", "value": 1}, "value", "is_set takes no value"),
    ],
)
def test_invalid_score_conditions(raw, path, reason):
    with pytest.raises(FilterError) as exc:
        parse_filter(raw)
    assert exc.value.path == path
    assert reason in exc.value.reason


# --- predictive ----------------------------------------------------------------------------------------------------


def _ex(engagement_: float, forms: int, channel: str = "email", age: float = 100.0) -> PredictiveExample:
    return PredictiveExample(None, engagement_, {"form": forms}, age, 1.0 if forms else None, 0.2, channel)


def test_predictive_learns_and_explains_and_validates():
    train = [(_ex(30.0 + i % 5, 3), 1) for i in range(25)] + [(_ex(i % 3, 0, "paid"), 0) for i in range(60)]
    validation = [(_ex(25.0, 2, age=130.0), 1) for _ in range(8)] + [(_ex(1.0, 0, "paid", 130.0), 0) for _ in range(30)]
    model = train_predictive(train, validation, target_stage="customer", days=30)
    # age is constant in training and different in validation: its float-noise std must not blow predictions up
    assert model.metrics["auc"] == 1.0 and model.metrics["validation_positives"] == 8
    assert model.channels == ("email", "paid")
    hot, hot_reasons = predict(model, _ex(40.0, 4))
    cold, _ = predict(model, _ex(0.0, 0, "paid"))
    assert 0.0 < cold < 0.2 < 0.8 < hot < 1.0
    assert len(hot_reasons) == 3 and all(r["effect"] > 0 for r in hot_reasons)


def test_predictive_refuses_too_little_history():
    few = [(_ex(30.0, 3), 1) for _ in range(5)] + [(_ex(0.0, 0), 0) for _ in range(60)]
    with pytest.raises(InsufficientHistory, match="5 contacts that reached customer within 30 days"):
        train_predictive(few, few, target_stage="customer", days=30)
    enough = [(_ex(30.0, 3), 1) for _ in range(25)] + [(_ex(0.0, 0), 0) for _ in range(60)]
    with pytest.raises(InsufficientHistory, match="validation window"):
        train_predictive(enough, enough[22:], target_stage="customer", days=30)


@given(st.lists(st.tuples(st.sampled_from([0.1, 0.2, 0.5, 0.7, 0.9]), st.integers(0, 1)), min_size=2, max_size=60))
def test_auc_matches_scikit_learn(pairs):
    from sklearn.metrics import roc_auc_score

    probs, labels = [p for p, _ in pairs], [y for _, y in pairs]
    if len(set(labels)) < 2:
        assert _auc(probs, labels) is None
        return
    assert _auc(probs, labels) == pytest.approx(roc_auc_score(labels, probs))


def test_percentile_grades_by_rank_with_ties_sharing():
    grades = percentile_grades({i: float(i) for i in range(100)})
    assert Counter(grades.values()) == {"A": 10, "B": 20, "C": 30, "D": 40}
    assert grades[99] == "A" and grades[0] == "D"
    tied = percentile_grades({1: 0.5, 2: 0.5, 3: 0.5, 4: 0.1})
    assert tied[1] == tied[2] == tied[3] == "A"


# --- the bulk rescoring's building blocks agree with the per-contact functions -----------------------------------

_BULK_NOW = datetime(2026, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
_BULK_RULES = {
    "half_life_days": 7.3,
    "rules": [
        {"key": "pages", "kind": "page", "points": 0.7, "max_per_period": 2, "period_days": 3},
        {"key": "careers", "kind": "page", "where": [{"path": "path", "op": "contains", "value": "career"}],
         "points": -4.1},
        {"key": "opens", "event": "email_opened", "points": 1.1, "max_per_period": 1},
        {"key": "order", "event": "Order Completed", "points": 20},
    ],
}  # fmt: skip
_BULK_EVENTS = [
    ("Pricing", "page", {"path": "/pricing"}),
    ("Careers", "page", {"path": "/careers"}),
    ("email_opened", "track", {}),
    ("Order Completed", "track", {}),
    ("Other", "track", {}),
]


@settings(max_examples=300, deadline=None)
@given(
    picks=st.lists(
        st.tuples(
            st.integers(0, len(_BULK_EVENTS) - 1),
            st.integers(-200 * 86_400_000_000, 0),
            st.integers(1, 10_000),
        ),
        max_size=40,
        unique_by=lambda t: t[2],
    ),
    custom=st.booleans(),
)
def test_engagement_matched_equals_engagement_bit_for_bit(picks, custom):
    from suppilo.engine.scoring import engagement_matched

    config = parse_engagement(_BULK_RULES if custom else DEFAULT_ENGAGEMENT)
    now_us = (_BULK_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    scored, matched = [], []
    for e, offset_us, eid in picks:
        name, kind, props = _BULK_EVENTS[e]
        at = _BULK_NOW + timedelta(microseconds=offset_us)
        scored.append(ScoredEvent(name, kind, at, props, eid))
        rules = tuple(i for i, r in enumerate(config.rules) if r.matches(name, kind, props))
        matched.append((now_us + offset_us, eid, rules))
    want = engagement(scored, config, _BULK_NOW)
    got = engagement_matched(matched, config, _BULK_NOW, now_us)
    assert got == want  # the same floats, contributions, cap state


@settings(max_examples=300, deadline=None)
@given(
    facts=st.builds(
        FitFacts,
        industry=st.sampled_from([None, "Software", " software", "Retail"]),
        employees=st.sampled_from([None, 0, 10, 499, 501]),
        revenue_minor=st.sampled_from([None, 1, 90_000_000]),
        revenue_currency=st.sampled_from([None, "EUR", "USD"]),
        country=st.sampled_from([None, "FI", "de", "US"]),
        job_title=st.sampled_from([None, "", "Head of Growth", "Headhunter", "VP Sales"]),
        tags=st.frozensets(st.sampled_from(["pain:churn", "PAIN:attribution", "x"]), max_size=2),
        budget_minor=st.sampled_from([None, 10, 1_000_000]),
        budget_currency=st.sampled_from([None, "EUR", "SEK"]),
    )
)
def test_fit_scorer_equals_best_fit(facts):
    from suppilo.engine.scoring import FitScorer

    icps = [
        (1, parse_icp({"industries": {"values": ["Software"], "weight": 20}, "employees": {"min": 10, "max": 500},
                       "location": {"regions": ["nordics"], "countries": ["DE"]}, "seniority": {"keywords": ["head"]},
                       "pain_points": {"tags": ["pain:churn"]}})),
        (2, parse_icp({"revenue": {"currency": "EUR", "min_minor": 50}, "job_titles": {"keywords": ["vp", "sales"]},
                       "budget": {"currency": "EUR", "min_minor": 100}, "grades": {"A": 90, "B": 50, "C": 20}})),
    ]  # fmt: skip

    def convert(amount: int, src: str, dst: str) -> int | None:
        return amount * 2 if (src, dst) == ("USD", "EUR") else None

    scorer = FitScorer(icps, convert)
    assert scorer(facts) == best_fit(icps, facts, convert)
    assert scorer(facts) == best_fit(icps, facts, convert)  # and again from the per-criterion memo


@settings(max_examples=300, deadline=None)
@given(
    people=st.lists(
        st.lists(
            st.tuples(
                st.integers(0, len(_BULK_EVENTS) - 1),
                # some events later than now (they count as of now), some at the same microsecond
                st.sampled_from([-86_400_000_000, -1, 0, 5_000_000]) | st.integers(-200 * 86_400_000_000, 0),
            ),
            max_size=30,
        ),
        max_size=6,
    ),
    custom=st.booleans(),
)
def test_engagement_batch_equals_engagement_bit_for_bit(people, custom):
    """Many contacts' events scored at once (numpy) give each contact exactly the per-contact path's floats."""
    from suppilo.engine.scoring import engagement_batch

    config = parse_engagement(_BULK_RULES if custom else DEFAULT_ENGAGEMENT)
    now_us = (_BULK_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    cids, ats, eids, matched = [], [], [], []
    want = {}
    eid = 0
    for cid, picks in reversed(list(enumerate(people, start=100))):  # contacts and events in no particular order
        scored = []
        for e, offset_us in reversed(picks):
            eid += 1
            name, kind, props = _BULK_EVENTS[e]
            at = min(_BULK_NOW + timedelta(microseconds=offset_us), _BULK_NOW)
            scored.append(ScoredEvent(name, kind, at, props, eid))
            rules = tuple(i for i, r in enumerate(config.rules) if r.matches(name, kind, props))
            if rules:
                cids.append(cid)
                ats.append(now_us + offset_us)
                eids.append(eid)
                matched.append(rules)
        result = engagement(scored, config, _BULK_NOW)
        if result.contributions:
            want[cid] = (
                result.score,
                [(c.rule, c.events, c.points, c.points_now) for c in result.contributions],
                result.state,
            )
    got = engagement_batch(cids, ats, eids, matched, config, _BULK_NOW, now_us)
    assert got == want
    # the same events already in (contact, time, id) order, as the columnar copy gives them (no sort taken)
    at_now = [min(a, now_us) for a in ats]
    o = sorted(range(len(cids)), key=lambda i: (cids[i], at_now[i], eids[i]))
    in_order = engagement_batch(
        [cids[i] for i in o], [ats[i] for i in o], [eids[i] for i in o], [matched[i] for i in o], config,
        _BULK_NOW, now_us,
    )  # fmt: skip
    assert in_order == want
    # a sorted part and an unsorted tail (the copy's main part and its tail): the tail holding each contact's latest
    # event (a stable sort by contact restores the order), or every third event (it does not: those contacts are
    # sorted again)
    last = {cids[i]: k for k, i in enumerate(o)}
    for tail in (set(last.values()), set(range(0, len(o), 3))):
        p = [o[k] for k in range(len(o)) if k not in tail] + [o[k] for k in sorted(tail, reverse=True)]
        mixed = engagement_batch(
            [cids[i] for i in p], [ats[i] for i in p], [eids[i] for i in p], [matched[i] for i in p], config,
            _BULK_NOW, now_us,
        )  # fmt: skip
        assert mixed == want
    for cid, (score, _, _) in got.items():  # the same float, not merely equal within a tolerance
        assert score.hex() == want[cid][0].hex()
