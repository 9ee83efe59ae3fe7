"""The filter language: validation with paths, hand-worked operator cases, dependencies, segment cycles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from suppilo.engine.filter_eval import (
    ContactSnapshot,
    EventSnapshot,
    OrderLineSnapshot,
    OrderSnapshot,
    StageChangeSnapshot,
    evaluate,
)
from suppilo.engine.filters import (
    FilterError,
    PropertyDef,
    check_segment_refs,
    dependencies,
    parse_filter,
    to_json,
)

NOW = datetime(2024, 3, 31, 12, 0, tzinfo=UTC)  # the EU DST switch day: irrelevant in UTC
PROPS = {
    "plan": PropertyDef("enum", ("pro", "basic")),
    "score": PropertyDef("number"),
    "vip": PropertyDef("boolean"),
    "renewal": PropertyDef("date"),
    "interests": PropertyDef("multi_enum", ("seo", "ads")),
}


def matches(raw: dict, snap: ContactSnapshot, segments: frozenset[int] = frozenset()) -> bool:
    flt = parse_filter(raw, contact_properties=PROPS)
    return evaluate(flt, snap, NOW, lambda s: s in segments)


def contact(**kw) -> ContactSnapshot:
    fields = {"lifecycle_stage": "interest", **kw.pop("fields", {})}
    return ContactSnapshot(id=1, fields=fields, **kw)


# --- validation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [
        (
            {"and": [{}, {}, {"or": [{"type": "contact", "field": "email", "op": "gt", "value": 1}]}]},
            "and[0]",
            "expected 'and', 'or', 'not'",
        ),
        (
            {
                "and": [
                    {"type": "tag", "op": "has_tag", "value": "a"},
                    {"type": "tag", "op": "has_tag", "value": "b"},
                    {"or": [{"type": "contact", "field": "country", "op": "eq", "value": 3}]},
                ]
            },
            "and[2].or[0].value",
            "a string is required",
        ),
        ({"not": {"type": "contact", "field": "nope", "op": "eq", "value": "x"}}, "not.field", "unknown contact field"),
        ({"type": "contact", "field": "properties.missing", "op": "eq", "value": "x"}, "field", "no contact property"),
        (
            {"type": "contact", "field": "properties.plan", "op": "eq", "value": "gold"},
            "value",
            "not one of the options",
        ),
        ({"type": "contact", "field": "properties.plan", "op": "in", "value": ["pro", "gold"]}, "value[1]", "options"),
        ({"type": "contact", "field": "properties.score", "op": "contains", "value": "1"}, "op", "number field"),
        ({"type": "contact", "field": "properties.score", "op": "between", "value": [5, 1]}, "value", "low"),
        ({"type": "contact", "field": "properties.score", "op": "gt", "value": True}, "value", "finite number"),
        ({"type": "contact", "field": "created_at", "op": "before", "value": "31.3.2024"}, "value", "YYYY-MM-DD"),
        ({"type": "contact", "field": "created_at", "op": "within_last_days", "value": 0}, "value", "whole number"),
        ({"type": "contact", "field": "created_at", "op": "is_set", "value": 1}, "value", "takes no value"),
        ({"type": "order_total", "currency": "eur", "op": "gt", "value": 1}, "currency", "ISO 4217"),
        (
            {"type": "event", "name": "x", "op": "did", "window": {"from": "2024-02-01", "to": "2024-01-01"}},
            "window.to",
            "before from",
        ),
        (
            {"type": "event", "name": "x", "op": "did", "window": {"last_days": 3, "from": "2024-01-01"}},
            "window",
            "either",
        ),
        ({"type": "event", "name": "x", "op": "at_least", "value": 0}, "value", "count"),
        (
            {"type": "event", "name": "x", "op": "did", "where": [{"path": 'a."b', "op": "eq", "value": 1}]},
            "where[0].path",
            "dotted",
        ),
        (
            {"type": "event", "name": "x", "op": "did", "where": [{"path": "a", "op": "gt", "value": "1"}]},
            "where[0].value",
            "finite number",
        ),
        (
            {"type": "stage_history", "op": "was_ever_in", "value": "customer", "window": {"last_days": 3}},
            "window",
            "no window",
        ),
        ({"type": "tag", "op": "has_all_tags", "value": []}, "value", "non-empty list"),
        ({"type": "segment", "op": "in_segment", "value": 1, "extra": 1}, "extra", "Extra inputs"),
        ({"type": "wat"}, "type", "unknown condition type"),
        ({"and": {"type": "tag"}}, "and", "list"),
        ({"and": [], "or": []}, "", "no other keys"),
    ],
)
def test_invalid_filters_name_the_bad_node(raw, path, reason):
    with pytest.raises(FilterError) as exc:
        parse_filter(raw, contact_properties=PROPS)
    assert exc.value.path == path
    assert reason in exc.value.reason


def test_depth_and_size_limits():
    deep: dict = {"type": "tag", "op": "has_tag", "value": "a"}
    for _ in range(13):
        deep = {"not": deep}
    with pytest.raises(FilterError, match="nest at most"):
        parse_filter(deep)
    with pytest.raises(FilterError, match="at most 200"):
        parse_filter({"or": [{"type": "tag", "op": "has_tag", "value": "a"}] * 201})


def test_json_round_trip_keeps_the_filter():
    raw = {
        "and": [
            {"type": "contact", "field": "properties.renewal", "op": "between", "value": ["2024-01-01", "2024-02-01"]},
            {
                "not": {
                    "type": "event",
                    "name": "Paid",
                    "op": "exactly",
                    "value": 2,
                    "where": [{"path": "a.b", "op": "in", "value": ["x", 1, True]}],
                    "window": {"last_days": 7},
                }
            },
            {"type": "order_total", "currency": "EUR", "op": "between", "value": [100, 200.5]},
        ]
    }
    flt = parse_filter(raw, contact_properties=PROPS)
    stored = to_json(flt)
    assert stored["and"][0]["field_type"] == "date"
    assert parse_filter(stored, contact_properties=PROPS) == flt
    with pytest.raises(FilterError) as exc:
        parse_filter({**stored["and"][0], "field_type": "number"}, contact_properties=PROPS)
    assert exc.value.path == "field_type"


# --- operators, by hand ------------------------------------------------------------------------------------------


def test_strings_ignore_ascii_case_only_and_negatives_hold_on_unset():
    ann = contact(fields={"first_name": "ÄNN-Marie"})
    nobody = contact()
    f = {"type": "contact", "field": "first_name"}
    assert matches({**f, "op": "eq", "value": "Änn-marie"}, ann)
    assert not matches({**f, "op": "eq", "value": "änn-marie"}, ann)  # Ä is not ASCII
    assert matches({**f, "op": "starts_with", "value": "Änn"}, ann)
    assert matches({**f, "op": "ends_with", "value": "MARIE"}, ann)
    assert matches({**f, "op": "contains", "value": "n-m"}, ann)
    assert matches({**f, "op": "in", "value": ["x", "änn-MARIE".replace("ä", "Ä")]}, ann)
    for op, value in [("neq", "x"), ("not_in", ["x"]), ("not_contains", "x"), ("is_not_set", None)]:
        node = {**f, "op": op, **({"value": value} if value is not None else {})}
        assert matches(node, nobody), op
    for op, value in [("eq", "x"), ("in", ["x"]), ("contains", "x"), ("starts_with", "x"), ("is_set", None)]:
        node = {**f, "op": op, **({"value": value} if value is not None else {})}
        assert not matches(node, nobody), op
    assert matches({"not": {**f, "op": "eq", "value": "x"}}, nobody) == matches(
        {**f, "op": "neq", "value": "x"}, nobody
    )


def test_custom_properties_of_the_wrong_type_are_unset():
    snap = contact(properties={"score": "12", "vip": 1, "renewal": "soon", "interests": "seo", "plan": 3})
    assert not matches({"type": "contact", "field": "properties.score", "op": "gte", "value": 0}, snap)
    assert matches({"type": "contact", "field": "properties.score", "op": "is_not_set"}, snap)
    assert not matches({"type": "contact", "field": "properties.vip", "op": "is_set"}, snap)
    assert matches({"type": "contact", "field": "properties.renewal", "op": "is_not_set"}, snap)
    assert not matches(
        {"type": "contact", "field": "properties.interests", "op": "contains_any", "value": ["seo"]}, snap
    )
    assert matches({"type": "contact", "field": "properties.interests", "op": "contains_none", "value": ["seo"]}, snap)
    assert matches({"type": "contact", "field": "properties.plan", "op": "neq", "value": "pro"}, snap)


def test_numbers_booleans_and_multi_enums():
    snap = contact(
        properties={"score": 7.5, "vip": False, "interests": ["SEO", "ads", 3]}, fields={"is_anonymous": True}
    )
    s = {"type": "contact", "field": "properties.score"}
    assert matches({**s, "op": "between", "value": [7.5, 8]}, snap)
    assert not matches({**s, "op": "gt", "value": 7.5}, snap)
    assert matches({**s, "op": "lte", "value": 7.5}, snap)
    assert matches({**s, "op": "neq", "value": 7}, snap)
    assert matches({"type": "contact", "field": "properties.vip", "op": "is_false"}, snap)
    assert not matches({"type": "contact", "field": "properties.vip", "op": "is_true"}, snap)
    assert matches({"type": "contact", "field": "is_anonymous", "op": "is_true"}, snap)
    i = {"type": "contact", "field": "properties.interests"}
    assert matches({**i, "op": "contains_all", "value": ["seo", "ADS"]}, snap)
    assert matches({**i, "op": "contains_any", "value": ["ads"]}, snap)
    assert not matches({**i, "op": "contains_none", "value": ["seo"]}, snap)


def test_instant_operators_cover_whole_utc_days_and_relative_windows():
    f = {"type": "contact", "field": "last_seen_at"}

    def at(t: datetime) -> ContactSnapshot:
        return contact(fields={"last_seen_at": t})

    midnight = datetime(2024, 3, 31, tzinfo=UTC)
    assert matches({**f, "op": "on", "value": "2024-03-31"}, at(midnight))
    assert not matches({**f, "op": "on", "value": "2024-03-30"}, at(midnight))
    assert matches({**f, "op": "before", "value": "2024-03-31"}, at(midnight - timedelta(microseconds=1)))
    assert not matches({**f, "op": "before", "value": "2024-03-31"}, at(midnight))
    assert not matches({**f, "op": "after", "value": "2024-03-31"}, at(midnight + timedelta(hours=23, minutes=59)))
    assert matches({**f, "op": "after", "value": "2024-03-31"}, at(midnight + timedelta(days=1)))
    between = {**f, "op": "between", "value": ["2024-03-01", "2024-03-31"]}
    assert matches(between, at(datetime(2024, 3, 31, 23, 59, 59, tzinfo=UTC)))
    assert not matches(between, at(datetime(2024, 4, 1, tzinfo=UTC)))
    # within the last 7 days: NOW − 7×24 h ≤ t ≤ NOW (24-hour days across the DST change)
    assert matches({**f, "op": "within_last_days", "value": 7}, at(NOW - timedelta(days=7)))
    assert not matches({**f, "op": "within_last_days", "value": 7}, at(NOW - timedelta(days=7, microseconds=1)))
    assert not matches({**f, "op": "within_last_days", "value": 7}, at(NOW + timedelta(seconds=1)))
    assert matches({**f, "op": "more_than_days_ago", "value": 7}, at(NOW - timedelta(days=7, microseconds=1)))
    assert not matches({**f, "op": "more_than_days_ago", "value": 7}, at(NOW - timedelta(days=7)))
    assert matches({**f, "op": "within_next_days", "value": 2}, at(NOW + timedelta(days=2)))
    assert not matches({**f, "op": "within_next_days", "value": 2}, at(NOW - timedelta(seconds=1)))


def test_calendar_date_properties_compare_dates():
    r = {"type": "contact", "field": "properties.renewal"}

    def on(d: str) -> ContactSnapshot:
        return contact(properties={"renewal": d})

    assert matches({**r, "op": "on", "value": "2024-03-31"}, on("2024-03-31T23:00:00Z"))
    assert matches({**r, "op": "within_last_days", "value": 30}, on("2024-03-01"))  # today 2024-03-31 − 30
    assert not matches({**r, "op": "within_last_days", "value": 30}, on("2024-02-29"))
    assert matches({**r, "op": "more_than_days_ago", "value": 30}, on("2024-02-29"))
    assert matches({**r, "op": "within_next_days", "value": 1}, on("2024-04-01"))
    assert not matches({**r, "op": "after", "value": "2024-04-01"}, on("2024-04-01"))
    assert matches({**r, "op": "between", "value": ["2024-04-01", "2024-04-01"]}, on("2024-04-01"))


def test_company_fields_are_unset_without_a_company():
    with_company = contact(company={"industry": "Software", "employees": 40}, company_properties={"tier": "A"})
    without = contact()
    ind = {"type": "company", "field": "industry"}
    assert matches({**ind, "op": "eq", "value": "software"}, with_company)
    assert not matches({**ind, "op": "eq", "value": "software"}, without)
    assert matches({**ind, "op": "neq", "value": "software"}, without)
    assert matches({"type": "company", "field": "employees", "op": "is_not_set"}, without)
    assert matches({"type": "company", "field": "employees", "op": "gte", "value": 40}, with_company)


def test_stages_tags_and_segments():
    snap = contact(
        fields={"lifecycle_stage": "customer", "lifecycle_stage_at": NOW - timedelta(days=2)},
        stage_changes=(StageChangeSnapshot("awareness", "interest", NOW - timedelta(days=40)),),
        tags=frozenset({"vip", "beta"}),
    )
    assert matches({"type": "stage", "op": "in", "value": ["customer", "loyal"]}, snap)
    assert matches({"type": "stage", "op": "not_in", "value": ["interest"]}, snap)
    for stage in ("awareness", "interest", "customer"):
        assert matches({"type": "stage_history", "op": "was_ever_in", "value": stage}, snap)
    assert not matches({"type": "stage_history", "op": "was_ever_in", "value": "loyal"}, snap)
    entered = {"type": "stage_history", "op": "entered"}
    assert matches({**entered, "value": "customer", "window": {"last_days": 3}}, snap)
    assert not matches({**entered, "value": "interest", "window": {"last_days": 30}}, snap)
    assert matches({**entered, "value": "interest"}, snap)
    assert matches({"type": "tag", "op": "has_all_tags", "value": ["vip", "beta"]}, snap)
    assert not matches({"type": "tag", "op": "has_all_tags", "value": ["vip", "churn"]}, snap)
    assert matches({"type": "tag", "op": "has_any_tags", "value": ["churn", "beta"]}, snap)
    assert matches({"type": "tag", "op": "has_no_tag", "value": "VIP"}, snap)  # tags compare exactly
    assert matches({"type": "segment", "op": "in_segment", "value": 4}, snap, frozenset({4}))
    assert matches({"type": "segment", "op": "not_in_segment", "value": 5}, snap, frozenset({4}))


def test_orders_never_mix_currencies_and_skip_cancelled():
    snap = contact(
        orders=(
            OrderSnapshot(NOW - timedelta(days=40), "EUR", 1000, lines=(OrderLineSnapshot("A"),)),
            OrderSnapshot(NOW - timedelta(days=5), "EUR", 500, lines=(OrderLineSnapshot("B"),)),
            OrderSnapshot(NOW - timedelta(days=3), "USD", 9000),
            OrderSnapshot(NOW - timedelta(days=1), "EUR", 7000, status="cancelled", lines=(OrderLineSnapshot("C"),)),
        )
    )
    total = {"type": "order_total", "currency": "EUR"}
    assert matches({**total, "op": "eq", "value": 1500}, snap)
    assert matches({**total, "op": "eq", "value": 500, "window": {"last_days": 30}}, snap)
    assert matches({**total, "currency": "SEK", "op": "eq", "value": 0}, snap)
    assert matches({"type": "order_count", "op": "eq", "value": 3}, snap)
    assert matches({"type": "order_count", "op": "lt", "value": 1, "window": {"last_days": 2}}, snap)
    assert matches({"type": "first_order", "op": "more_than_days_ago", "value": 30}, snap)
    assert matches({"type": "last_order", "op": "within_last_days", "value": 3}, snap)
    assert matches({"type": "last_order", "op": "is_not_set", "window": {"last_days": 2}}, snap)
    assert matches({"type": "bought_product", "value": ["A"]}, snap)
    assert not matches({"type": "bought_product", "value": ["A"], "window": {"last_days": 30}}, snap)
    assert not matches({"type": "bought_product", "value": ["C"]}, snap)
    assert matches({"type": "order_count", "op": "eq", "value": 0}, contact())
    assert not matches({"type": "first_order", "op": "before", "value": "2030-01-01"}, contact())


def test_events_with_counts_windows_and_property_filters():
    snap = contact(
        events=(
            EventSnapshot("Viewed", NOW - timedelta(days=1), {"plan": "Pro", "n": 3, "page": {"path": "/pricing"}}),
            EventSnapshot("Viewed", NOW - timedelta(days=2), {"plan": "basic", "n": 1.5}),
            EventSnapshot("Viewed", NOW - timedelta(days=20), {"plan": "pro", "flag": True}),
            EventSnapshot("Signed Up", NOW - timedelta(days=20), {}),
        )
    )
    ev = {"type": "event", "name": "Viewed"}
    assert matches({**ev, "op": "exactly", "value": 3}, snap)
    assert matches({**ev, "op": "exactly", "value": 2, "window": {"last_days": 7}}, snap)
    assert matches({**ev, "op": "at_least", "value": 2, "where": [{"path": "plan", "op": "eq", "value": "PRO"}]}, snap)
    assert matches(
        {**ev, "op": "exactly", "value": 1, "where": [{"path": "page.path", "op": "contains", "value": "PRIC"}]}, snap
    )
    assert matches({**ev, "op": "exactly", "value": 1, "where": [{"path": "n", "op": "gt", "value": 2}]}, snap)
    assert matches({**ev, "op": "exactly", "value": 2, "where": [{"path": "n", "op": "lt", "value": 5}]}, snap)
    assert matches({**ev, "op": "exactly", "value": 2, "where": [{"path": "flag", "op": "neq", "value": True}]}, snap)
    assert matches({**ev, "op": "exactly", "value": 1, "where": [{"path": "n", "op": "in", "value": [1.5, "x"]}]}, snap)
    assert matches({**ev, "op": "at_most", "value": 0, "window": {"from": "2024-03-01", "to": "2024-03-10"}}, snap)
    assert matches({"type": "event", "name": "Signed Up", "op": "did_not", "window": {"last_days": 7}}, snap)
    assert matches({"type": "event", "name": "signed up", "op": "did_not"}, snap)  # names compare exactly


# --- dependencies and segment references -------------------------------------------------------------------------


def test_dependencies_name_what_a_filter_reads():
    flt = parse_filter(
        {
            "or": [
                {"type": "company", "field": "industry", "op": "eq", "value": "x"},
                {"not": {"type": "event", "name": "Paid", "op": "did", "window": {"last_days": 3}}},
                {"type": "segment", "op": "in_segment", "value": 9},
                {"type": "stage_history", "op": "was_ever_in", "value": "customer"},
                {"type": "bought_product", "value": ["A"]},
                {"type": "tag", "op": "has_tag", "value": "a"},
            ]
        }
    )
    assert dependencies(flt) == {"contact", "company", "events:Paid", "time", "segment:9", "stages", "orders", "tags"}
    fixed = parse_filter(
        {"type": "event", "name": "Paid", "op": "did", "window": {"from": "2024-01-01", "to": "2024-01-02"}}
    )
    assert dependencies(fixed) == {"events:Paid"}


def seg(*refs: int):
    return parse_filter({"or": [{"type": "segment", "op": "in_segment", "value": r} for r in refs]})


def test_segment_cycles_are_refused_including_indirect_ones():
    stored = {1: seg(2), 2: seg(3), 3: None, 4: seg(5), 5: seg(4)}

    def get(sid: int):
        return stored[sid]

    check_segment_refs(seg(1, 3), 7, get)  # 7 → 1 → 2 → 3 (a static list): fine
    with pytest.raises(FilterError) as exc:
        check_segment_refs(seg(3, 1), 3, get)
    assert exc.value.path == "or[0].value" and "would use itself" in exc.value.reason
    with pytest.raises(FilterError) as exc:
        check_segment_refs(seg(1), 2, get)  # 2 → 1 → 2
    assert "2 → 1 → 2" in exc.value.reason
    with pytest.raises(FilterError, match="cycle"):
        check_segment_refs(seg(4), None, get)
    with pytest.raises(FilterError, match="does not exist"):
        check_segment_refs(seg(99), None, get)


def test_consent_conditions_read_the_latest_statement_of_the_topic():
    from suppilo.engine.filter_eval import ConsentSnapshot

    t0 = NOW - timedelta(days=2)
    granted_then_withdrawn = (
        ConsentSnapshot("marketing", "granted", t0, 1),
        ConsentSnapshot("marketing", "withdrawn", t0, 2),  # same time: the later id wins
        ConsentSnapshot("news", "granted", t0, 3),
    )
    snap = contact(consents=granted_then_withdrawn)

    def c(op, topic="marketing"):
        return {"type": "consent", "op": op, "topic": topic}

    assert matches(c("withdrawn"), snap) and not matches(c("granted"), snap)
    assert matches(c("granted", "news"), snap) and matches(c("no_record", "offers"), snap)
    objected = contact(consents=(*granted_then_withdrawn, ConsentSnapshot("*", "objection", NOW, 4)))
    assert matches(c("objected"), objected) and not matches(c("granted", "news"), objected)
    assert matches({"not": c("granted", "news")}, objected)
    assert dependencies(parse_filter(c("granted"))) == {"consent"}
    with pytest.raises(FilterError) as exc:
        parse_filter(c("granted", "*"))
    assert exc.value.path == "topic"
    with pytest.raises(FilterError) as exc:
        parse_filter(c("maybe"))
    assert exc.value.path == "op"
