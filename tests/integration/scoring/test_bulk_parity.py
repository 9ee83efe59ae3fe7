"""The set-based rescoring (``scoring.bulk``) stores exactly what the per-contact path stores.

Two workspaces get the same generated contacts, companies, tags, events, ICPs and engagement rules; one is scored
with ``service.recompute_fit`` / ``recompute_engagement`` (chunks of 1,000, one contact at a time), the other with
``bulk.bulk_fit`` / ``bulk_engagement``. Then the data changes (a company grows, new events, a contact moves) and
both are scored again later, and once more at that same moment (the set-based path then keeps rows stored as of now
instead of rewriting them), so changed, unchanged and decayed rows are all compared: every stored score column (bit
for bit), the explanation, the cap state, the history rows and the reported changes.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, update

from suppilo.analytics import columnar
from suppilo.analytics import service as analytics_service
from suppilo.analytics.schemas import RateCreate
from suppilo.scoring import bulk, service
from suppilo.scoring.models import ContactScore, ScoreChange, ScoreExplanation
from suppilo.scoring.schemas import IcpCreate
from suppilo.segments.compiler import companies, contact_tags, contacts, events
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=3, hours=5, microseconds=17)
INDUSTRIES = [None, "Software", "software ", "Retail", "Hotels"]
TITLES = [None, "", "Head of Growth", "Headhunter", "CEO", "marketing manager", "Buyer", 'Chief "Buyer"\t\\ Nordics']
COUNTRIES = [None, "FI", "se", "DE", "US", "EE"]
TAGS = ["pain:attribution", "PAIN:churn", "newsletter"]
EVENTS = [
    ("page", "Pricing", {"path": "/pricing"}),
    ("page", "Careers", {"path": "/careers/jobs"}),
    ("track", "Form Submitted", {}),
    ("track", "email_opened", {"machine": False}),
    ("track", "email_opened", {"machine": True}),
    ("track", "email_clicked", {"machine": False}),
    ("track", "Order Completed", {"total": 10}),
    ("track", "email_unsubscribed", {}),
    ("track", "Other", {}),
    # for the columnar read: paths that are not strings or missing, a property missing, a larger order
    ("page", "Pricing", {"path": 5}),
    ("page", "Home", {}),
    ("page", "Careers", {"path": None}),
    ("page", "Careers", {"path": ["/careers"]}),
    ("track", "email_clicked", {}),
    ("track", "Order Completed", {"total": 99}),
    ("track", "email_opened", {"machine": "false"}),
    ("track", "email_clicked", {"machine": 0}),
    ("track", "email_opened", {"machine": None}),
]
ICPS = [
    {
        "industries": {"values": ["Software", "Hotels"], "weight": 20},
        "employees": {"min": 10, "max": 500, "weight": 20},
        "location": {"regions": ["nordics"], "countries": ["DE"], "weight": 20},
        "seniority": {"keywords": ["head", "ceo"], "weight": 20},
        "pain_points": {"tags": ["pain:attribution", "pain:churn"], "weight": 10},
    },
    {
        "revenue": {"currency": "EUR", "min_minor": 50_000_000, "weight": 10},
        "job_titles": {"keywords": ["marketing", "buyer"], "weight": 15},
        "budget": {"currency": "EUR", "min_minor": 100_000, "weight": 5},
        "grades": {"A": 90, "B": 50, "C": 20},
    },
]
RULES = [
    None,  # the defaults
    {
        "half_life_days": 7.5,
        "rules": [
            {"key": "any_page", "kind": "page", "points": 1.5, "max_per_period": 2, "period_days": 3},
            {
                "key": "careers",
                "kind": "page",
                "where": [{"path": "path", "op": "contains", "value": "career"}],
                "points": -4,
            },
            {"key": "opens", "event": "email_opened", "points": 0.7, "max_per_period": 1},
            {"key": "order", "event": "Order Completed", "points": 25},
            {
                "key": "big_order",
                "event": "Order Completed",
                "where": [{"path": "total", "op": "gt", "value": 50}],
                "points": 5,
                "max_per_period": 1,
            },
            {
                "key": "not_pricing",
                "kind": "page",
                "where": [{"path": "path", "op": "neq", "value": "/PRICING"}],
                "points": 0.25,
            },
        ],
    },
    {  # a rule the columnar copy cannot answer (a page rule testing another property): the row store is read
        "rules": [
            {"key": "any_page", "kind": "page", "points": 1},
            {"key": "odd_page", "kind": "page", "where": [{"path": "total", "op": "lt", "value": 1000}], "points": 2},
        ],
    },
]

offsets = st.builds(
    lambda d, s: timedelta(days=d, seconds=s),
    st.integers(-400, 2),
    st.sampled_from([0, 1, 3599, 43200, 86399]),
)
company_rows = st.fixed_dictionaries(
    {
        "industry": st.sampled_from(INDUSTRIES),
        "employees": st.sampled_from([None, 0, 9, 10, 120, 500, 501]),
        "revenue": st.sampled_from([None, 10_000_000, 50_000_000, 90_000_000]),
        "currency": st.sampled_from(["EUR", "USD", "SEK"]),
        "country": st.sampled_from(COUNTRIES),
        "budget": st.sampled_from([None, 50_000, 200_000, "lots"]),
    }
)
contact_rows = st.fixed_dictionaries(
    {
        "company": st.none() | st.integers(0, 2),
        "country": st.sampled_from(COUNTRIES),
        "title": st.sampled_from(TITLES),
        "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=2),
        "budget": st.sampled_from([None, 150_000, 90_000.0, True]),
        "events": st.lists(st.tuples(st.integers(0, len(EVENTS) - 1), offsets), max_size=8),
        "later": st.lists(st.tuples(st.integers(0, len(EVENTS) - 1), offsets), max_size=3),
    }
)


def _workspace(session: Any) -> int:
    slug = f"bulk-{secrets.token_hex(6)}"
    return workspaces_service.create_workspace(
        session,
        WorkspaceCreate(
            slug=slug, name=slug, currency="EUR", timezone="UTC", country="FI", address_line1="Street 1",
            postal_code="00100", city="Helsinki", address_country="FI",
        ),
    ).id  # fmt: skip


def _events(ws: int, cid: int, items: list[tuple[int, timedelta]], at: datetime, tag: str) -> list[dict[str, Any]]:
    out = []
    for j, (e, off) in enumerate(items):
        kind, name, props = EVENTS[e]
        out.append(
            {
                "workspace_id": ws,
                "contact_id": cid,
                "kind": kind,
                "name": name,
                "properties": props,
                "context": {},
                "occurred_at": at + off,
                "received_at": at,
                "message_id": f"{tag}-{cid}-{j}",
            }
        )
    return out


def _build(session: Any, company_data: list[dict[str, Any]], people: list[dict[str, Any]], icps, rules, rate) -> Any:
    ws = _workspace(session)
    if rate:
        analytics_service.upsert_rates(
            session, ws, [RateCreate(date=date(2026, 1, 1), base="USD", quote="EUR", rate=Decimal("0.9"))]
        )
    company_ids = []
    for i, c in enumerate(company_data):
        props = {} if c["budget"] is None else {"budget_minor": c["budget"]}
        company_ids.append(
            session.execute(
                insert(companies)
                .values(
                    workspace_id=ws, name=f"C{i}", name_lower=f"c{i}", industry=c["industry"],
                    employees=c["employees"], annual_revenue_minor=c["revenue"], revenue_currency=c["currency"],
                    country=c["country"], properties=props, created_at=T0, updated_at=T0,
                )
                .returning(companies.c.id)
            ).scalar_one()
        )  # fmt: skip
    ids = []
    for p in people:
        props = {} if p["budget"] is None else {"budget_minor": p["budget"], "budget_minor_currency": "USD"}
        ids.append(
            session.execute(
                insert(contacts)
                .values(
                    workspace_id=ws, country=p["country"], job_title=p["title"],
                    company_id=None if p["company"] is None else company_ids[p["company"]],
                    lifecycle_stage="interest", properties=props, created_at=T0, updated_at=T0,
                )
                .returning(contacts.c.id)
            ).scalar_one()
        )  # fmt: skip
    tag_rows = [{"workspace_id": ws, "contact_id": cid, "tag": t} for cid, p in zip(ids, people) for t in p["tags"]]
    if tag_rows:
        session.execute(insert(contact_tags), tag_rows)
    ev = [r for cid, p in zip(ids, people) for r in _events(ws, cid, p["events"], T0, "a")]
    if ev:
        session.execute(insert(events), ev)
    for i, definition in enumerate(icps):
        service.create_icp(session, ws, IcpCreate(name=f"icp{i}", definition=definition))
    if rules is not None:
        service.set_engagement_config(session, ws, rules)
    session.flush()
    return ws, company_ids, ids


def _change(session: Any, ws: int, company_ids: list[int], ids: list[int], people: list[dict[str, Any]]) -> None:
    """The same edits in both workspaces: a company grows, a contact moves country, new events arrive."""
    session.execute(update(companies).where(companies.c.id == company_ids[0]).values(employees=250, industry="Hotels"))
    session.execute(update(contacts).where(contacts.c.id == ids[0]).values(country="NO", job_title="Head of Sales"))
    ev = [r for cid, p in zip(ids, people) for r in _events(ws, cid, p["later"], T1, "b")]
    if ev:
        session.execute(insert(events), ev)
    session.flush()


def _stored(session: Any, ws: int, ids: list[int], icp_names: dict[int, str]) -> tuple[list[Any], list[Any]]:
    pos = {cid: i for i, cid in enumerate(ids)}
    shared = dict(
        session.execute(
            select(ScoreExplanation.id, ScoreExplanation.explanation).where(ScoreExplanation.workspace_id == ws)
        ).all()
    )
    scores = sorted(
        (
            pos[r.contact_id], r.kind, r.score, r.grade, icp_names.get(r.icp_id), r.explanation,
            shared[r.explanation_id] if r.explanation_id is not None else None, r.state,
            r.decay_key, r.half_life_seconds, r.as_of, r.computed_at,
        )
        for r in session.scalars(select(ContactScore).where(ContactScore.workspace_id == ws))
    )  # fmt: skip
    history = sorted(
        (pos[r.contact_id], r.kind, r.score, r.previous, r.grade, r.at, r.reason)
        for r in session.scalars(select(ScoreChange).where(ScoreChange.workspace_id == ws))
    )
    return scores, history


def _icp_names(session: Any, ws: int) -> dict[int, str]:
    return {i.id: i.name for i in service.list_icps(session, ws)}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    report_multiple_bugs=False,
)
@given(
    company_data=st.lists(company_rows, min_size=3, max_size=3),
    people=st.lists(contact_rows, min_size=1, max_size=20),
    icp_picks=st.lists(st.sampled_from([0, 1]), min_size=1, max_size=2, unique=True),
    rules=st.sampled_from(RULES),
    rate=st.booleans(),
)
def test_bulk_rescoring_equals_per_contact(session_factory, company_data, people, icp_picks, rules, rate):
    icps = [ICPS[i] for i in icp_picks]
    # a third workspace is rescored in full with its events read from a columnar copy of the event log
    store = columnar.ColumnarStore(Path(tempfile.mkdtemp(prefix="bulk-columnar-")))
    with session_factory() as session:
        a, a_companies, a_ids = _build(session, company_data, people, icps, rules, rate)
        b, b_companies, b_ids = _build(session, company_data, people, icps, rules, rate)
        c, c_companies, c_ids = _build(session, company_data, people, icps, rules, rate)
        a_names, b_names = _icp_names(session, a), _icp_names(session, b)
        c_names = _icp_names(session, c)
        for now, edit in ((T0, False), (T1, True), (T1, False)):  # the last: the same moment again, no change
            if edit:
                _change(session, a, a_companies, a_ids, people)
                _change(session, b, b_companies, b_ids, people)
                _change(session, c, c_companies, c_ids, people)
            fit_a = service.recompute_fit(session, a, a_ids, now)
            eng_a = service.recompute_engagement(session, a, a_ids, now)
            if now == T0:
                fit_b = bulk.bulk_fit(session, b, None, now)
                eng_b = bulk.bulk_engagement(session, b, None, now)
            else:  # a list of ids takes the same path as the whole workspace
                fit_b = bulk.bulk_fit(session, b, b_ids, now)
                eng_b = bulk.bulk_engagement(session, b, b_ids, now)
            bulk.bulk_fit(session, c, None, now)
            eng_c = bulk.bulk_engagement(session, c, None, now, store=store)
            session.flush()
            session.expire_all()
            want = _stored(session, a, a_ids, a_names)
            assert _stored(session, b, b_ids, b_names) == want
            assert _stored(session, c, c_ids, c_names) == want
            for ra, rb in ((fit_a, fit_b), (eng_a, eng_b)):
                assert rb.scored == ra.scored
                assert sorted(b_ids.index(c) for c in rb.changed) == sorted(a_ids.index(c) for c in ra.changed)
            assert eng_c.scored == eng_a.scored
            assert sorted(c_ids.index(x) for x in eng_c.changed) == sorted(a_ids.index(x) for x in eng_a.changed)
        session.rollback()
    shutil.rmtree(store.directory, ignore_errors=True)


def test_bulk_rescoring_of_a_large_workspace_matches_and_writes_history(session, workspace):
    """More contacts than one read range (the range size made small): every row and history line as per contact."""
    people = [
        {
            "company": i % 3, "country": COUNTRIES[i % len(COUNTRIES)], "title": TITLES[i % len(TITLES)],
            "tags": [TAGS[i % 3]] if i % 2 else [], "budget": None,
            "events": [(j % len(EVENTS), timedelta(days=-(i + j) % 50)) for j in range(i % 5)], "later": [],
        }
        for i in range(120)
    ]  # fmt: skip
    company_data = [
        {"industry": "Software", "employees": 50, "revenue": None, "currency": "EUR", "country": "FI", "budget": None},
        {"industry": "Retail", "employees": None, "revenue": 1, "currency": "EUR", "country": None, "budget": None},
        {"industry": None, "employees": 900, "revenue": None, "currency": "EUR", "country": "DE", "budget": None},
    ]
    a, _, a_ids = _build(session, company_data, people, ICPS, None, False)
    b, _, b_ids = _build(session, company_data, people, ICPS, None, False)
    old = bulk.RANGE
    bulk.RANGE = 7
    try:
        done: list[int] = []
        result = bulk.rescore_all(session, b, now=T0, progress=done.append)
    finally:
        bulk.RANGE = old
    service.recompute(session, a, a_ids, now=T0)
    session.flush()
    session.expire_all()
    got, want = _stored(session, b, b_ids, _icp_names(session, b)), _stored(session, a, a_ids, _icp_names(session, a))
    assert got == want
    assert sum(done) == 2 * len(b_ids) and len(done) > 2
    assert result["fit"].scored == len(b_ids) and len(result["fit"].changed) == len(b_ids)
    assert sum(1 for h in got[1] if h[1] == "fit" and h[6] == "profile or ICP changed") == len(b_ids)
