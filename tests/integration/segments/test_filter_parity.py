"""THE LAW: for generated filters and data, the SQL compiler and the in-memory evaluator select the same contacts."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from suppilo.engine.filter_eval import evaluate
from suppilo.engine.filters import PropertyDef, decay_key, parse_filter, to_json
from suppilo.segments.compiler import (
    companies,
    consent_records,
    contact_scores,
    contact_tags,
    contacts,
    events,
    order_lines,
    orders,
    stage_changes,
)
from suppilo.segments.service import count_matching, matching_ids, members_from_sets
from suppilo.segments.snapshot import load_snapshots
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
CONTACT_PROPS = {
    "plan": PropertyDef("enum", ("pro", "basic", "free")),
    "score": PropertyDef("number"),
    "vip": PropertyDef("boolean"),
    "renewal": PropertyDef("date"),
    "interests": PropertyDef("multi_enum", ("seo", "ads", "email")),
    "nick": PropertyDef("string"),
}
COMPANY_PROPS = {"tier": PropertyDef("string")}
STAGES = ["awareness", "interest", "customer", "loyal"]
TAGS = ["vip", "beta", "churn"]
SKUS = ["A-1", "B-2", "C-3"]
EVENT_NAMES = ["Signed Up", "Viewed"]
WORDS = ["pro", "PRO", "Basic", "free", "ann", "Ann-Li", "ärla", "ÄRLA", "x@ex.fi", "fi", "FI", "se", "", "seo", "Ads"]

# --- data --------------------------------------------------------------------------------------------------------

instants = st.builds(
    lambda d, s, us: NOW + timedelta(days=d, seconds=s, microseconds=us),
    st.integers(-45, 12),
    st.sampled_from([0, 1, -1, -43200, 43199, 3600]),
    st.sampled_from([0, 1, 999999]),
)
maybe_instant = st.none() | instants
words = st.sampled_from(WORDS)
numbers = st.sampled_from([-1, 0, 1, 1.5, 3, 10, 2.25])
json_scalars = st.none() | words | numbers | st.booleans()
date_strings = st.builds(lambda d: (NOW.date() + timedelta(days=d)).isoformat(), st.integers(-45, 12))
property_values: dict[str, st.SearchStrategy[Any]] = {
    "plan": st.sampled_from(["pro", "Basic", "FREE", "other"]) | json_scalars,
    "score": numbers | json_scalars,
    "vip": st.booleans() | json_scalars,
    "renewal": date_strings
    | date_strings.map(lambda s: s + "T10:00:00Z")
    | st.sampled_from(["soon", "2024-1-1"])
    | json_scalars,
    "interests": st.lists(st.sampled_from(["seo", "SEO", "ads", "email", 3]), max_size=3) | json_scalars,
    "nick": words | json_scalars,
}


@st.composite
def contact_rows(draw: st.DrawFn) -> dict[str, Any]:
    props = {}
    for name, strat in property_values.items():
        if draw(st.booleans()):
            props[name] = draw(strat)
    stage_changes_ = draw(
        st.lists(st.tuples(st.sampled_from([None, *STAGES]), st.sampled_from(STAGES), instants), max_size=3)
    )
    order_list = draw(
        st.lists(
            st.tuples(
                instants,
                st.sampled_from(["EUR", "USD"]),
                st.sampled_from([0, 500, 1000, 2500]),
                st.sampled_from(["completed", "completed", "cancelled"]),
                st.lists(st.sampled_from(SKUS), max_size=2),
            ),
            max_size=3,
        )
    )
    event_props = st.fixed_dictionaries(
        {},
        optional={
            "plan": json_scalars,
            "n": numbers | json_scalars,
            "flag": st.booleans() | json_scalars,
            "nested": st.fixed_dictionaries({}, optional={"x": json_scalars}),
        },
    )
    event_list = draw(st.lists(st.tuples(st.sampled_from(EVENT_NAMES), instants, event_props), max_size=4))
    score_rows = {}
    for kind in ("fit", "engagement", "predictive"):
        if draw(st.booleans()):
            score_rows[kind] = (
                draw(SCORE_VALUES[kind]),
                draw(st.none() | st.sampled_from(["A", "B", "C", "D"])),
                draw(instants),
                draw(st.sampled_from([86_400.0, 30 * 86_400.0, 3_600.0])),
            )
    consent_list = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["marketing", "news"]),
                st.sampled_from(["granted", "granted", "withdrawn", "objection"]),
                st.sampled_from([NOW - timedelta(days=3), NOW - timedelta(days=1), NOW]),
            ),
            max_size=4,
        )
    )
    return {
        "email": draw(st.none() | st.sampled_from(["ann@ex.fi", "Bob@Shop.SE", "ärla@ex.fi"])),
        "first_name": draw(st.none() | words),
        "country": draw(st.none() | st.sampled_from(["FI", "SE", "fi"])),
        "is_anonymous": draw(st.booleans()),
        "lifecycle_stage": draw(st.sampled_from(STAGES)),
        "lifecycle_stage_at": draw(maybe_instant),
        "created_at": draw(instants),
        "last_seen_at": draw(maybe_instant),
        "first_touch_channel": draw(st.none() | st.sampled_from(["email", "paid_search"])),
        "company": draw(st.none() | st.integers(0, 2)),
        "properties": props,
        "tags": draw(st.sets(st.sampled_from(TAGS))),
        "stage_changes": stage_changes_,
        "orders": order_list,
        "events": event_list,
        "segments": draw(st.sets(st.sampled_from([1, 2]))),
        "scores": score_rows,
        "consents": consent_list,
    }


company_rows = st.fixed_dictionaries(
    {
        "name": words.filter(bool),
        "industry": st.none() | st.sampled_from(["Retail", "software", "SOFTWARE"]),
        "employees": st.none() | st.sampled_from([1, 10, 50, 250]),
        "country": st.none() | st.sampled_from(["FI", "se"]),
        "properties": st.fixed_dictionaries({}, optional={"tier": json_scalars}),
    }
)

SCORE_VALUES: dict[str, st.SearchStrategy[float]] = {
    "fit": st.sampled_from([0.0, 12.5, 40.0, 60.0, 79.99, 80.0, 100.0]),
    "predictive": st.sampled_from([0.0, 5.0, 50.0, 99.5]),
    "engagement": st.sampled_from([-20.0, -3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 7.5, 10.0, 40.0, 1e-3]),
}
SCORE_THRESHOLDS = [-10, -1, -0.5, 0, 0.5, 1, 2, 5, 10, 40, 60, 80]

# --- filters -----------------------------------------------------------------------------------------------------

days = st.integers(1, 40)
dates = st.builds(lambda d: (NOW.date() + timedelta(days=d)).isoformat(), st.integers(-45, 12))
windows = (
    st.none()
    | st.builds(lambda n: {"last_days": n}, days)
    | st.builds(lambda a, b: {"from": min(a, b), "to": max(a, b)}, dates, dates)
)


def date_op() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.sampled_from(["before", "after", "on"]), dates),
        st.tuples(st.just("between"), st.lists(dates, min_size=2, max_size=2).map(sorted)),
        st.tuples(st.sampled_from(["within_last_days", "more_than_days_ago", "within_next_days"]), days),
        st.tuples(st.sampled_from(["is_set", "is_not_set"]), st.none()),
    )


def number_op() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]), numbers),
        st.tuples(st.just("between"), st.lists(numbers, min_size=2, max_size=2).map(sorted)),
    )


def string_op(pool: list[str]) -> st.SearchStrategy[tuple[str, Any]]:
    nonempty = st.sampled_from([w for w in pool if w])
    return st.one_of(
        st.tuples(st.sampled_from(["eq", "neq"]), st.sampled_from(pool)),
        st.tuples(st.sampled_from(["contains", "not_contains", "starts_with", "ends_with"]), nonempty),
        st.tuples(st.sampled_from(["in", "not_in"]), st.lists(st.sampled_from(pool), min_size=1, max_size=3)),
        st.tuples(st.sampled_from(["is_set", "is_not_set"]), st.none()),
    )


def leaf(kind: str, field: str, op_value: tuple[str, Any]) -> dict[str, Any]:
    op, value = op_value
    node = {"type": kind, "field": field, "op": op}
    if value is not None:
        node["value"] = value
    return node


def leaves_strategy(company_ids: list[int]) -> st.SearchStrategy[dict[str, Any]]:
    text_pool = ["pro", "Ann", "ärla", "ÄRLA", "@ex", "fi", "Se", "x@ex.fi", "ai", ""]
    contact = st.one_of(
        st.builds(leaf, st.just("contact"), st.sampled_from(["email", "first_name", "country"]), string_op(text_pool)),
        st.builds(leaf, st.just("contact"), st.just("lifecycle_stage"), string_op(STAGES)),
        st.builds(
            leaf,
            st.just("contact"),
            st.just("is_anonymous"),
            st.tuples(st.sampled_from(["is_true", "is_false", "is_set"]), st.none()),
        ),
        st.builds(leaf, st.just("contact"), st.sampled_from(["created_at", "last_seen_at"]), date_op()),
        st.builds(
            leaf,
            st.just("contact"),
            st.just("company_id"),
            st.one_of(
                st.tuples(st.sampled_from(["eq", "neq"]), st.sampled_from(company_ids)),
                st.tuples(st.sampled_from(["in", "not_in"]), st.lists(st.sampled_from(company_ids), min_size=1)),
                st.tuples(st.sampled_from(["is_set", "is_not_set"]), st.none()),
            ),
        ),
        st.builds(leaf, st.just("contact"), st.just("properties.nick"), string_op(text_pool)),
        st.builds(leaf, st.just("contact"), st.just("properties.score"), number_op()),
        st.builds(
            leaf,
            st.just("contact"),
            st.just("properties.plan"),
            st.one_of(
                st.tuples(st.sampled_from(["eq", "neq"]), st.sampled_from(["pro", "BASIC", "free"])),
                st.tuples(
                    st.sampled_from(["in", "not_in"]),
                    st.lists(st.sampled_from(["pro", "basic", "Free"]), min_size=1, max_size=2),
                ),
                st.tuples(st.sampled_from(["is_set", "is_not_set"]), st.none()),
            ),
        ),
        st.builds(
            leaf,
            st.just("contact"),
            st.just("properties.vip"),
            st.tuples(st.sampled_from(["is_true", "is_false", "is_set", "is_not_set"]), st.none()),
        ),
        st.builds(leaf, st.just("contact"), st.just("properties.renewal"), date_op()),
        st.builds(
            leaf,
            st.just("contact"),
            st.just("properties.interests"),
            st.one_of(
                st.tuples(
                    st.sampled_from(["contains_any", "contains_all", "contains_none"]),
                    st.lists(st.sampled_from(["seo", "Ads", "email"]), min_size=1, max_size=2),
                ),
                st.tuples(st.sampled_from(["is_set", "is_not_set"]), st.none()),
            ),
        ),
    )
    company = st.one_of(
        st.builds(
            leaf,
            st.just("company"),
            st.sampled_from(["industry", "country", "name"]),
            string_op([*text_pool, "software"]),
        ),
        st.builds(
            leaf, st.just("company"), st.just("employees"), number_op() | st.tuples(st.just("is_set"), st.none())
        ),
        st.builds(leaf, st.just("company"), st.just("properties.tier"), string_op(text_pool)),
    )
    stage = st.one_of(
        st.builds(
            lambda op, v: {"type": "stage", "op": op, "value": v},
            st.sampled_from(["in", "not_in"]),
            st.lists(st.sampled_from(STAGES), min_size=1, max_size=2),
        ),
        st.builds(lambda s: {"type": "stage_history", "op": "was_ever_in", "value": s}, st.sampled_from(STAGES)),
        st.builds(
            lambda s, w: {"type": "stage_history", "op": "entered", "value": s, **({"window": w} if w else {})},
            st.sampled_from(STAGES),
            windows,
        ),
    )
    tag = st.one_of(
        st.builds(
            lambda op, t: {"type": "tag", "op": op, "value": t},
            st.sampled_from(["has_tag", "has_no_tag"]),
            st.sampled_from(TAGS),
        ),
        st.builds(
            lambda op, t: {"type": "tag", "op": op, "value": t},
            st.sampled_from(["has_any_tags", "has_all_tags"]),
            st.lists(st.sampled_from(TAGS), min_size=1, max_size=3),
        ),
    )

    def with_window(node: dict[str, Any], w: Any) -> dict[str, Any]:
        return {**node, "window": w} if w else node

    order = st.one_of(
        st.builds(
            lambda ov, w: with_window({"type": "order_count", "op": ov[0], "value": ov[1]}, w),
            st.one_of(
                st.tuples(st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]), st.sampled_from([0, 1, 2])),
                st.tuples(st.just("between"), st.sampled_from([[0, 1], [1, 2], [2, 3]])),
            ),
            windows,
        ),
        st.builds(
            lambda c, ov, w: with_window({"type": "order_total", "currency": c, "op": ov[0], "value": ov[1]}, w),
            st.sampled_from(["EUR", "USD"]),
            st.one_of(
                st.tuples(
                    st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]), st.sampled_from([0, 500, 1000, 3000])
                ),
                st.tuples(st.just("between"), st.sampled_from([[0, 0], [500, 1500], [1000, 5000]])),
            ),
            windows,
        ),
        st.builds(
            lambda t, ov, w: with_window(
                {"type": t, "op": ov[0], **({"value": ov[1]} if ov[1] is not None else {})}, w
            ),
            st.sampled_from(["first_order", "last_order"]),
            date_op(),
            windows,
        ),
        st.builds(
            lambda s, w: with_window({"type": "bought_product", "value": s}, w),
            st.lists(st.sampled_from(SKUS), min_size=1, max_size=2),
            windows,
        ),
    )
    where = st.one_of(
        st.builds(
            lambda p, op, v: {"path": p, "op": op, "value": v},
            st.sampled_from(["plan", "n", "flag", "nested.x"]),
            st.sampled_from(["eq", "neq"]),
            words | numbers | st.booleans(),
        ),
        st.builds(
            lambda p, v: {"path": p, "op": "contains", "value": v},
            st.sampled_from(["plan", "nested.x"]),
            st.sampled_from(["pr", "A", "ärl"]),
        ),
        st.builds(
            lambda p, op, v: {"path": p, "op": op, "value": v},
            st.sampled_from(["n", "nested.x"]),
            st.sampled_from(["gt", "lt"]),
            numbers,
        ),
        st.builds(
            lambda p, v: {"path": p, "op": "in", "value": v},
            st.sampled_from(["plan", "n"]),
            st.lists(words | numbers | st.booleans(), min_size=1, max_size=3),
        ),
    )
    event = st.builds(
        lambda name, ov, wh, w: with_window(
            {
                "type": "event",
                "name": name,
                "op": ov[0],
                **({"value": ov[1]} if ov[1] is not None else {}),
                "where": wh,
            },
            w,
        ),
        st.sampled_from(EVENT_NAMES),
        st.one_of(
            st.tuples(st.sampled_from(["did", "did_not"]), st.none()),
            st.tuples(st.just("at_least"), st.integers(1, 3)),
            st.tuples(st.sampled_from(["at_most", "exactly"]), st.integers(0, 3)),
        ),
        st.lists(where, max_size=2),
        windows,
    )
    segment = st.builds(
        lambda op, s: {"type": "segment", "op": op, "value": s},
        st.sampled_from(["in_segment", "not_in_segment"]),
        st.sampled_from([1, 2, 3]),
    )
    score_range = st.one_of(
        st.tuples(st.sampled_from(["gt", "gte", "lt", "lte"]), st.sampled_from(SCORE_THRESHOLDS)),
        st.tuples(st.just("between"), st.lists(st.sampled_from(SCORE_THRESHOLDS), min_size=2, max_size=2).map(sorted)),
    )
    score = st.one_of(
        st.builds(
            lambda k, ov: {"type": "score", "kind": k, "op": ov[0], "value": ov[1]},
            st.sampled_from(["fit", "engagement", "predictive"]),
            score_range,
        ),
        st.builds(
            lambda k, g: {"type": "score", "kind": k, "op": "grade_in", "value": g},
            st.sampled_from(["fit", "predictive"]),
            st.lists(st.sampled_from(["A", "B", "C", "D"]), min_size=1, max_size=3),
        ),
        st.builds(
            lambda k, op: {"type": "score", "kind": k, "op": op},
            st.sampled_from(["fit", "predictive"]),
            st.sampled_from(["is_set", "is_not_set"]),
        ),
    )
    consent = st.builds(
        lambda op, topic: {"type": "consent", "op": op, "topic": topic},
        st.sampled_from(["granted", "withdrawn", "no_record", "objected"]),
        st.sampled_from(["marketing", "news"]),
    )
    return st.one_of(contact, company, stage, tag, order, event, segment, score, consent)


def filters(company_ids: list[int]) -> st.SearchStrategy[dict[str, Any]]:
    base = leaves_strategy(company_ids)

    def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.one_of(
            st.builds(lambda xs: {"and": xs}, st.lists(children, max_size=3)),
            st.builds(lambda xs: {"or": xs}, st.lists(children, max_size=3)),
            st.builds(lambda x: {"not": x}, children),
        )

    return st.recursive(base, extend, max_leaves=6).filter(lambda f: _depth(f) <= 3)


def _depth(f: Any) -> int:
    if isinstance(f, dict):
        for key in ("and", "or"):
            if key in f:
                return 1 + max((_depth(c) for c in f[key]), default=0)
        if "not" in f:
            return 1 + _depth(f["not"])
    return 0


# --- insertion ---------------------------------------------------------------------------------------------------


def insert_data(session: Any, ws_id: int, company_data: list[dict[str, Any]], people: list[dict[str, Any]]):
    company_ids = [
        session.execute(
            insert(companies).returning(companies.c.id),
            {
                "workspace_id": ws_id,
                "name": c["name"],
                "name_lower": c["name"].lower(),
                "industry": c["industry"],
                "employees": c["employees"],
                "country": c["country"],
                "properties": c["properties"],
                "created_at": NOW,
                "updated_at": NOW,
            },
        ).scalar_one()
        for c in company_data
    ]
    ids: list[int] = []
    for i, p in enumerate(people):
        cid = session.execute(
            insert(contacts).returning(contacts.c.id),
            {
                "workspace_id": ws_id,
                "email": None if p["email"] is None else f"{i}.{p['email']}",
                "first_name": p["first_name"],
                "country": p["country"],
                "is_anonymous": p["is_anonymous"],
                "lifecycle_stage": p["lifecycle_stage"],
                "lifecycle_stage_at": p["lifecycle_stage_at"],
                "created_at": p["created_at"],
                "updated_at": p["created_at"],
                "last_seen_at": p["last_seen_at"],
                "first_touch_channel": p["first_touch_channel"],
                "company_id": None if p["company"] is None else company_ids[p["company"]],
                "properties": p["properties"],
                "version": 1,
            },
        ).scalar_one()
        ids.append(cid)
        if p["tags"]:
            session.execute(
                insert(contact_tags), [{"workspace_id": ws_id, "contact_id": cid, "tag": t} for t in p["tags"]]
            )
        if p["stage_changes"]:
            session.execute(
                insert(stage_changes),
                [
                    {"workspace_id": ws_id, "contact_id": cid, "from_stage": f, "to_stage": t, "changed_at": at}
                    for f, t, at in p["stage_changes"]
                ],
            )
        for j, (at, cur, total, status, skus) in enumerate(p["orders"]):
            oid = session.execute(
                insert(orders).returning(orders.c.id),
                {
                    "workspace_id": ws_id,
                    "external_id": f"o-{i}-{j}",
                    "contact_id": cid,
                    "status": status,
                    "placed_at": at,
                    "currency": cur,
                    "total_minor": total,
                    "created_at": at,
                    "updated_at": at,
                },
            ).scalar_one()
            if skus:
                session.execute(
                    insert(order_lines),
                    [{"workspace_id": ws_id, "order_id": oid, "sku": s, "unit_price_minor": 100} for s in skus],
                )
        if p["events"]:
            session.execute(
                insert(events),
                [
                    {
                        "workspace_id": ws_id,
                        "contact_id": cid,
                        "kind": "track",
                        "name": name,
                        "properties": props,
                        "occurred_at": at,
                        "received_at": at,
                        "message_id": f"m-{i}-{k}",
                    }
                    for k, (name, at, props) in enumerate(p["events"])
                ],
            )
        for kind, (value, grade, as_of, half_life) in p["scores"].items():
            engagement = kind == "engagement"
            session.execute(
                insert(contact_scores),
                {
                    "workspace_id": ws_id,
                    "contact_id": cid,
                    "kind": kind,
                    "score": value,
                    "grade": None if engagement else grade,
                    "explanation": [],
                    "state": {},
                    "decay_key": decay_key(value, as_of, half_life) if engagement else None,
                    "half_life_seconds": half_life if engagement else None,
                    "as_of": as_of,
                    "computed_at": as_of,
                },
            )
        if p["consents"]:
            session.execute(
                insert(consent_records),
                [
                    {
                        "workspace_id": ws_id,
                        "contact_id": cid,
                        "topic": "*" if action == "objection" else topic,
                        "action": action,
                        "recorded_at": at,
                    }
                    for topic, action, at in p["consents"]
                ],
            )
    # An anonymous event (no contact) must never count for anyone, nor make NOT IN go NULL.
    session.execute(
        insert(events),
        {
            "workspace_id": ws_id,
            "contact_id": None,
            "kind": "track",
            "name": "Signed Up",
            "properties": {},
            "occurred_at": NOW,
            "received_at": NOW,
            "message_id": "anon",
        },
    )
    return company_ids, ids


def new_workspace(session: Any) -> int:
    slug = f"seg-{secrets.token_hex(6)}"
    ws = workspaces_service.create_workspace(
        session,
        WorkspaceCreate(
            slug=slug,
            name=slug,
            currency="EUR",
            timezone="UTC",
            country="FI",
            address_line1="Street 1",
            postal_code="00100",
            city="Helsinki",
            address_country="FI",
        ),
    )
    return ws.id


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    report_multiple_bugs=False,
)
@given(
    company_data=st.lists(company_rows, min_size=3, max_size=3),
    people=st.lists(contact_rows(), min_size=1, max_size=24),
    data=st.data(),
)
def test_sql_and_memory_agree(session_factory, company_data, people, data):
    with session_factory() as session:
        ws_id = new_workspace(session)
        company_ids, ids = insert_data(session, ws_id, company_data, people)
        session.commit()
        memberships = {s: {ids[i] for i, p in enumerate(people) if s in p["segments"]} for s in (1, 2, 3)}
        snapshots = load_snapshots(session, ws_id, ids)
        assert set(snapshots) == set(ids)
        for _ in range(4):
            raw = data.draw(filters(company_ids), label="filter")
            flt = parse_filter(raw, contact_properties=CONTACT_PROPS, company_properties=COMPANY_PROPS)
            assert parse_filter(to_json(flt), contact_properties=CONTACT_PROPS, company_properties=COMPANY_PROPS) == flt
            expected = {
                cid
                for cid in ids
                if evaluate(flt, snapshots[cid], NOW, lambda s, cid=cid: cid in memberships.get(s, set()))
            }
            segment_select = members_from_sets(memberships)
            got = matching_ids(session, ws_id, flt, NOW, segment_select=segment_select)
            assert set(got) == expected, (raw, sorted(set(got) ^ expected))
            assert count_matching(session, ws_id, flt, NOW, segment_select=segment_select) == len(expected)
