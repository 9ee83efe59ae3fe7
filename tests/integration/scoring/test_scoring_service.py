"""Scoring on a real database: ICP fit with explanations and history, engagement (live and recomputed), the
scoring run's cursors, score-driven segments and stage moves, tenant isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from suppilo.companies import service as companies_service
from suppilo.companies.schemas import CompanyCreate, CompanyUpdate
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import StageChange
from suppilo.contacts.properties import create_definition
from suppilo.contacts.schemas import ContactCreate, ContactUpdate, PropertyDefinitionCreate
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.events.models import Event
from suppilo.events.service import record_event
from suppilo.scoring import service, tasks
from suppilo.scoring.models import ContactScore, ScoringSettings
from suppilo.scoring.schemas import IcpCreate, IcpUpdate
from suppilo.segments import service as segments_service
from suppilo.segments.schemas import SegmentCreate

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ICP = {
    "industries": {"values": ["Software"], "weight": 30},
    "employees": {"min": 10, "max": 500, "weight": 30},
    "location": {"regions": ["nordics"], "weight": 20},
    "seniority": {"keywords": ["head", "director"], "weight": 20},
}


def _company(session, ws: int, **kw) -> int:
    data = {"name": "Acme", "domain": "acme.example", "industry": "Software", "employees": 50, "country": "FI", **kw}
    return companies_service.create_company(session, ws, CompanyCreate(**data)).id


def _contact(session, ws: int, company_id: int | None = None, **kw) -> int:
    data = {"email": f"p{kw.pop('n', 0)}@person.example", "job_title": "Head of Marketing", "country": "SE", **kw}
    return contacts_service.create_contact(session, ws, ContactCreate(company_id=company_id, **data)).id


def _icp(session, ws: int, definition: dict | None = None, name: str = "Core") -> int:
    return service.create_icp(session, ws, IcpCreate(name=name, definition=definition or ICP)).id


def test_fit_score_grade_and_explanation(session, workspace):
    ws = workspace.id
    good = _contact(session, ws, _company(session, ws), n=1)
    bare = _contact(session, ws, None, n=2, job_title=None, country=None)
    icp_id = _icp(session, ws)
    result = service.recompute_fit(session, ws, [good, bare], NOW)
    assert result.scored == 2 and sorted(result.changed) == sorted([good, bare])

    fit = service.explain(session, ws, good, NOW)["scores"]["fit"]
    assert (fit["score"], fit["grade"], fit["icp_id"], fit["icp_name"]) == (100.0, "A", icp_id, "Core")
    assert [c["detail"] for c in fit["criteria"]] == [
        "industry 'Software' is one of Software",
        "50 employees (within 10–500)",
        "country SE is in nordics",
        "seniority in the job title: 'Head of Marketing' has 'head'",
    ]
    fit = service.explain(session, ws, bare, NOW)["scores"]["fit"]
    assert (fit["score"], fit["grade"]) == (0.0, "D")
    assert [c["detail"] for c in fit["criteria"]] == [
        "industry unknown",
        "employees unknown",
        "country unknown",
        "job title unknown",
    ]
    # nothing changed: nothing rewritten, no history
    again = service.recompute_fit(session, ws, [good, bare], NOW + DAY)
    assert again.changed == []
    assert len(service.score_history(session, ws, good, "fit")) == 1


def test_company_change_rescoring_on_the_run_with_history(session, workspace):
    from suppilo.contacts.models import Contact

    ws = workspace.id
    t = datetime.now(UTC)
    company = _company(session, ws)
    person = _contact(session, ws, company, n=1)
    _icp(session, ws)
    first = service.run_workspace(session, ws, t)
    assert person in first.fit.changed and company in first.companies.changed
    assert service.company_score(session, ws, company).score == 80.0  # seniority is a person's criterion
    session.execute(update(Contact).where(Contact.id == person).values(updated_at=t - DAY))  # profile untouched
    session.commit()

    # the company grows out of the range: its contacts are rescored on the next run
    companies_service.update_company(session, ws, company, CompanyUpdate(employees=5000))
    session.commit()
    second = service.run_workspace(session, ws, t + timedelta(seconds=1))
    assert second.fit.changed == [person] and second.companies.changed == [company]
    fit = service.explain(session, ws, person, t + timedelta(seconds=1))["scores"]["fit"]
    assert (fit["score"], fit["grade"]) == (70.0, "B")
    assert fit["criteria"][1]["detail"] == "5000 employees (outside 10–500)"
    history = service.score_history(session, ws, person, "fit")
    assert [(h.score, h.previous, h.grade) for h in history] == [(70.0, 100.0, "B"), (100.0, None, "A")]
    # a third run with nothing new changes nothing
    assert service.run_workspace(session, ws, t + timedelta(seconds=2)).fit.changed == []


def test_icp_validation_names_the_field_and_names_are_unique(session, workspace):
    ws = workspace.id
    with pytest.raises(DomainError) as exc:
        service.create_icp(session, ws, IcpCreate(name="x", definition={"employees": {"min": 9, "max": 1}}))
    assert exc.value.field == "definition.employees" and "min must not be above max" in exc.value.message
    with pytest.raises(DomainError) as exc:
        service.create_icp(session, ws, IcpCreate(name="x", definition={"budget": {"currency": "EUR"}}))
    assert exc.value.field == "definition.budget.min_minor"
    _icp(session, ws)
    with pytest.raises(Conflict):
        _icp(session, ws)


def test_best_icp_wins_and_inactive_or_no_icp_removes_fit(session, workspace):
    ws = workspace.id
    person = _contact(session, ws, None, n=1, country="US")
    core = _icp(session, ws)
    us = _icp(session, ws, {"location": {"countries": ["US"]}}, name="US")
    service.recompute_fit(session, ws, [person], NOW)
    assert service.explain(session, ws, person, NOW)["scores"]["fit"]["icp_id"] == us
    service.update_icp(session, ws, us, IcpUpdate(active=False))
    service.recompute_fit(session, ws, [person], NOW)
    fit = service.explain(session, ws, person, NOW)["scores"]["fit"]
    assert fit["icp_id"] == core and fit["score"] == 20.0  # seniority only
    service.delete_icp(session, ws, core)
    result = service.recompute_fit(session, ws, [person], NOW)
    assert result.changed == [person]
    assert "fit" not in service.explain(session, ws, person, NOW)["scores"]


def test_revenue_converted_with_the_workspace_rates_and_budget_from_properties(session, workspace):
    from suppilo.analytics import service as analytics_service
    from suppilo.analytics.schemas import RateCreate

    ws = workspace.id
    create_definition(session, ws, PropertyDefinitionCreate(object_type="company", name="budget_minor", type="number"))
    company = _company(
        session, ws, annual_revenue_minor=2_000_000_00, revenue_currency="USD", properties={"budget_minor": 900_000}
    )
    person = _contact(session, ws, company, n=1)
    _icp(
        session,
        ws,
        {
            "revenue": {"currency": "EUR", "min_minor": 1_500_000_00},
            "budget": {"currency": "EUR", "min_minor": 500_000},
        },
    )
    service.recompute_fit(session, ws, [person], NOW)
    fit = service.explain(session, ws, person, NOW)["scores"]["fit"]
    assert fit["criteria"][0]["matched"] is False and "no USD→EUR rate is known" in fit["criteria"][0]["detail"]
    assert fit["criteria"][1]["matched"] is True
    analytics_service.upsert_rates(session, ws, [RateCreate(date=NOW.date(), base="EUR", quote="USD", rate="1.25")])
    service.recompute_fit(session, ws, [person], NOW)
    fit = service.explain(session, ws, person, NOW)["scores"]["fit"]
    assert fit["criteria"][0]["matched"] is True and fit["score"] == 100.0
    assert "1,600,000.00 EUR (converted from 2,000,000.00 USD)" in fit["criteria"][0]["detail"]


def _event(session, ws: int, cid: int, name: str, at: datetime, **props) -> None:
    record_event(session, ws, cid, name, props, at)


def test_live_engagement_equals_recomputation_and_decays(session, workspace):
    ws = workspace.id
    person = _contact(session, ws, None, n=1)
    events = [
        ("Form Submitted", NOW - 30 * DAY, {}),
        ("email_opened", NOW - 10 * DAY, {"machine": True}),  # machine open: no points
        ("email_opened", NOW - 10 * DAY, {"machine": False}),
        ("email_unsubscribed", NOW - 5 * DAY, {}),
        ("Order Completed", NOW - 40 * DAY, {}),  # out of order
    ]
    live = 0.0
    for name, at, props in events:
        _event(session, ws, person, name, at, **props)
        live = service.apply_engagement(session, ws, person, name, at, properties=props, now=NOW)
    expected = 10 * 0.5 + 2 * 2 ** (-10 / 30) - 15 * 2 ** (-5 / 30) + 20 * 2 ** (-40 / 30)
    assert live == pytest.approx(expected)
    eng = service.explain(session, ws, person, NOW)["scores"]["engagement"]
    assert eng["score"] == pytest.approx(expected, abs=1e-4)
    assert {c["rule"]: c["events"] for c in eng["contributions"]} == {
        "form_submit": 1,
        "email_open": 1,
        "unsubscribe": 1,
        "order": 1,
    }
    assert sum(c["points_now"] for c in eng["contributions"]) == pytest.approx(expected, abs=1e-3)
    # the run's recomputation from the events agrees
    service.recompute_engagement(session, ws, [person], NOW)
    assert service.explain(session, ws, person, NOW)["scores"]["engagement"]["score"] == pytest.approx(
        expected, abs=1e-4
    )
    # read 30 days later: halved, without any write
    later = service.explain(session, ws, person, NOW + 30 * DAY)["scores"]["engagement"]
    assert later["score"] == pytest.approx(expected / 2, abs=1e-4)
    history = service.score_history(session, ws, person, "engagement")
    assert history[-1].reason == "Form Submitted: form_submit +10"


def test_run_picks_up_new_and_late_committed_events_idempotently(session, workspace):
    from suppilo.companies.models import Company
    from suppilo.contacts.models import Contact

    ws = workspace.id
    t = datetime.now(UTC)
    a = _contact(session, ws, None, n=1)
    b = _contact(session, ws, None, n=2)
    # profiles untouched for a day: only events make these contacts due
    session.execute(update(Contact).where(Contact.workspace_id == ws).values(updated_at=t - DAY))
    session.execute(update(Company).where(Company.workspace_id == ws).values(updated_at=t - DAY))
    service.run_workspace(session, ws, t)
    session.commit()
    _event(session, ws, a, "Form Submitted", t)
    session.commit()
    run = service.run_workspace(session, ws, t + timedelta(seconds=1))
    assert run.engagement.changed == [a]
    session.commit()
    # b's event committed after a later id had been seen: its id is below the cursor
    _event(session, ws, b, "Form Submitted", t)
    top = session.scalar(select(func.max(Event.id)).where(Event.workspace_id == ws))
    session.execute(update(ScoringSettings).where(ScoringSettings.workspace_id == ws).values(event_cursor=top + 50))
    session.commit()
    run = service.run_workspace(session, ws, t + timedelta(seconds=2))
    assert run.engagement.changed == [b]
    session.commit()
    # looking at the same events again changes nothing
    run = service.run_workspace(session, ws, t + timedelta(seconds=3))
    assert run.engagement.scored >= 1 and run.engagement.changed == []
    score = session.scalar(
        select(ContactScore.score).where(ContactScore.contact_id == b, ContactScore.kind == "engagement")
    )
    assert score == pytest.approx(10, abs=1e-3)


def test_run_scoring_job_commits_per_workspace(session_factory, workspace, other_workspace):
    with session_factory() as s:
        a = _contact(s, workspace.id, None, n=1)
        _icp(s, workspace.id)
        _event(s, workspace.id, a, "Form Submitted", datetime.now(UTC))
        s.commit()
    out = tasks.run_scoring(session_factory)
    assert out[workspace.id] == {"fit": 1, "companies": 1, "engagement": 1}  # its company comes from the email domain
    assert out[other_workspace.id] == {"fit": 0, "companies": 0, "engagement": 0}
    with session_factory() as s:
        scores = service.explain(s, workspace.id, a)["scores"]
        assert scores["fit"]["grade"] == "C" and scores["engagement"]["score"] == pytest.approx(10, abs=0.01)
        assert service.explain(s, workspace.id, a)["priority"] == "low"


def test_score_segments_follow_score_changes(session, workspace):
    ws = workspace.id
    company = _company(session, ws)
    person = _contact(session, ws, company, n=1)
    _icp(session, ws)
    seg = segments_service.create_segment(
        session,
        ws,
        SegmentCreate(
            name="Hot",
            filter={
                "and": [
                    {"type": "score", "kind": "fit", "op": "grade_in", "value": ["A", "B"]},
                    {"type": "score", "kind": "engagement", "op": "gte", "value": 15},
                ]
            },
        ),
        NOW,
    )
    assert seg.dependencies == ["score:engagement", "score:fit", "time"]
    service.recompute_fit(session, ws, [person], NOW)
    assert segments_service.list_members(session, ws, seg.id)[0] == []
    _event(session, ws, person, "Form Submitted", NOW)
    service.apply_engagement(session, ws, person, "Form Submitted", NOW, now=NOW)
    assert segments_service.list_members(session, ws, seg.id)[0] == []  # 10 < 15
    service.apply_engagement(session, ws, person, "Order Completed", NOW, now=NOW)
    assert [m.contact_id for m in segments_service.list_members(session, ws, seg.id)[0]] == [person]
    entered = session.scalar(select(Event.properties).where(Event.workspace_id == ws, Event.name == "segment.entered"))
    assert entered["segment_id"] == seg.id and entered["reason"] == "score:engagement"
    # decay alone takes the contact out when time-relative segments refresh (30 points → 7.5 after 60 days)
    segments_service.refresh_time_relative(session, ws, NOW + 60 * DAY)
    assert segments_service.list_members(session, ws, seg.id)[0] == []


def test_engagement_rules_and_stage_thresholds(session, workspace):
    ws = workspace.id
    person = _contact(session, ws, None, n=1, lifecycle_stage="interest")
    with pytest.raises(DomainError) as exc:
        service.set_engagement_config(session, ws, {"rules": [{"key": "x", "event": "y", "points": float("nan")}]})
    assert exc.value.field == "rules[0].points"
    with pytest.raises(DomainError) as exc:
        service.set_engagement_config(
            session,
            ws,
            {"rules": [], "stage_thresholds": [{"min_score": 5, "from_stages": ["nope"], "to_stage": "decision"}]},
        )
    assert exc.value.field == "stage_thresholds[0].from_stages[0]"
    service.set_engagement_config(
        session,
        ws,
        {
            "half_life_days": 7,
            "rules": [{"key": "demo", "event": "Demo Requested", "points": 25}],
            "stage_thresholds": [{"min_score": 20, "from_stages": ["interest"], "to_stage": "consideration"}],
        },
    )
    _event(session, ws, person, "Demo Requested", NOW)
    assert service.apply_engagement(session, ws, person, "Demo Requested", NOW, now=NOW) == 25
    contact = contacts_service.get_contact(session, ws, person)
    assert contact.lifecycle_stage == "consideration"
    change = session.scalar(select(StageChange).where(StageChange.contact_id == person, StageChange.source == "score"))
    assert change.reason == "engagement score 25.0 reached 20"
    assert service.engagement_config(session, ws).half_life_days == 7


def test_priority_matrix_counts_contacts(session, workspace):
    ws = workspace.id
    company = _company(session, ws)
    hot = _contact(session, ws, company, n=1)
    cold = _contact(session, ws, None, n=2, job_title="Intern", country="BR")
    _contact(session, ws, None, n=3)  # never scored
    _icp(session, ws)
    service.recompute_fit(session, ws, [hot, cold], NOW)
    for minutes in range(3):
        _event(session, ws, hot, "Order Completed", NOW - timedelta(minutes=minutes))
    service.recompute_engagement(session, ws, [hot, cold], NOW)
    matrix = service.priority_matrix(session, ws, NOW)
    assert matrix["engagement_bands"] == ["high", "medium", "low", "none"]
    assert sum(sum(r.values()) for r in matrix["rows"].values()) == 3
    assert matrix["rows"]["A"]["high"] == 1  # three orders: about 60 points
    assert matrix["rows"]["D"]["none"] == 1
    assert matrix["rows"]["none"]["none"] == 1
    assert service.explain(session, ws, hot, NOW)["priority"] == "sales_now"


def test_other_workspaces_contacts_are_not_found(session, workspace, other_workspace):
    person = _contact(session, workspace.id, None, n=1)
    with pytest.raises(NotFound):
        service.explain(session, other_workspace.id, person)
    with pytest.raises(NotFound) as exc:
        service.recompute(session, other_workspace.id, [person])
    assert exc.value.field == "contact_ids[0]"
    with pytest.raises(NotFound):
        service.apply_engagement(session, other_workspace.id, person, "Form Submitted", NOW)
    icp = _icp(session, workspace.id)
    with pytest.raises(NotFound):
        service.get_icp(session, other_workspace.id, icp)


def test_merge_moves_engagement_to_the_kept_contact_on_the_next_run(session, workspace):
    from suppilo.contacts.merge import merge_contacts

    ws = workspace.id
    keep = _contact(session, ws, None, n=1)
    gone = _contact(session, ws, None, n=2)
    _event(session, ws, keep, "Form Submitted", NOW)
    _event(session, ws, gone, "Order Completed", NOW)
    service.run_workspace(session, ws, NOW)
    session.commit()
    merge_contacts(session, ws, keep, gone, reason="duplicate", actor=None)
    session.commit()
    run = service.run_workspace(session, ws, NOW + timedelta(minutes=1))
    assert keep in run.engagement.changed
    rows = dict(
        session.execute(
            select(ContactScore.contact_id, ContactScore.score).where(
                ContactScore.workspace_id == ws, ContactScore.kind == "engagement"
            )
        ).all()
    )
    assert set(rows) == {keep} and rows[keep] == pytest.approx(30, abs=0.01)


def test_a_new_half_life_rebuilds_the_stored_engagement(session, workspace):
    ws = workspace.id
    person = _contact(session, ws, None, n=1)
    _event(session, ws, person, "Form Submitted", NOW - 7 * DAY)
    service.recompute_engagement(session, ws, [person], NOW)
    rules = {**service.engagement_to_json(service.engagement_config(session, ws)), "half_life_days": 7}
    service.set_engagement_config(session, ws, rules)
    _event(session, ws, person, "Form Submitted", NOW)
    now_value = service.apply_engagement(session, ws, person, "Form Submitted", NOW, now=NOW)
    assert now_value == pytest.approx(10 + 5)  # the old event at the new half-life, plus the new one
    row = session.execute(
        select(ContactScore.half_life_seconds).where(
            ContactScore.contact_id == person, ContactScore.kind == "engagement"
        )
    ).scalar_one()
    assert row == 7 * 86_400


def test_mql_rule_needs_both_engagement_and_fit(session, workspace):
    ws = workspace.id
    person = _contact(session, ws, None, n=1, lifecycle_stage="interest", job_title="Intern", country="BR")
    service.set_engagement_config(
        session,
        ws,
        {
            "rules": [{"key": "demo", "event": "Demo Requested", "points": 40}],
            "stage_thresholds": [
                {"min_score": 30, "min_fit_grade": "B", "from_stages": ["interest"], "to_stage": "consideration"}
            ],
        },
    )
    _icp(session, ws, {"seniority": {"keywords": ["head"]}, "location": {"regions": ["nordics"]}})
    service.recompute_fit(session, ws, [person], NOW)
    _event(session, ws, person, "Demo Requested", NOW)
    service.apply_engagement(session, ws, person, "Demo Requested", NOW, now=NOW)
    assert contacts_service.get_contact(session, ws, person).lifecycle_stage == "interest"  # engaged, poor fit
    # the profile improves: the fit recomputation completes the rule
    contacts_service.update_contact(session, ws, person, ContactUpdate(job_title="Head of Buying", country="FI"))
    service.recompute_fit(session, ws, [person], NOW + DAY)
    assert contacts_service.get_contact(session, ws, person).lifecycle_stage == "consideration"
    change = session.scalar(select(StageChange).where(StageChange.contact_id == person, StageChange.source == "score"))
    assert change.reason == "engagement score 39.1 reached 30 with fit grade A"


def test_an_event_dated_slightly_in_the_future_counts_as_of_now(session, workspace):
    ws = workspace.id
    person = _contact(session, ws, None, n=1)
    _event(session, ws, person, "Form Submitted", NOW + timedelta(minutes=10))  # the client's clock is ahead
    _event(session, ws, person, "Order Completed", NOW + 3 * DAY)  # bogus: ignored
    result = service.recompute_engagement(session, ws, [person], NOW)
    assert result.changed == [person]
    assert service.explain(session, ws, person, NOW)["scores"]["engagement"]["score"] == pytest.approx(10)


@pytest.mark.parametrize("path", ["per_contact", "set_based"])
def test_a_rescoring_later_keeps_rows_that_only_decayed(session, workspace, path):
    """Decay alone changes no stored engagement row: a rescoring six hours later leaves the row of a contact without
    new events as it was (same as_of, no history line) while its score read now is the decayed one; a contact with a
    new event is rewritten as of now with a history line."""
    from suppilo.scoring import bulk
    from suppilo.scoring.models import ScoreChange

    ws = workspace.id
    quiet = _contact(session, ws, None, n=1)
    busy = _contact(session, ws, None, n=2)
    for person in (quiet, busy):
        _event(session, ws, person, "Form Submitted", NOW - 3 * DAY)
        _event(session, ws, person, "email_opened", NOW - 2 * DAY, machine=False)

    def rescore(at: datetime) -> service.ScoreWrite:
        if path == "per_contact":
            return service.recompute_engagement(session, ws, [quiet, busy], at)
        return bulk.bulk_engagement(session, ws, None, at)

    def stored(cid: int) -> ContactScore:
        row = session.scalars(
            select(ContactScore).where(ContactScore.contact_id == cid, ContactScore.kind == "engagement")
        ).one()
        session.refresh(row)
        return row

    def history(cid: int) -> int:
        return session.scalar(
            select(func.count())
            .select_from(ScoreChange)
            .where(ScoreChange.contact_id == cid, ScoreChange.kind == "engagement")
        )

    rescore(NOW)
    first = {cid: (stored(cid).as_of, stored(cid).decay_key, history(cid)) for cid in (quiet, busy)}
    score_then = service.explain(session, ws, quiet, NOW)["scores"]["engagement"]["score"]
    later = NOW + timedelta(hours=6)
    _event(session, ws, busy, "Pricing Page Viewed", later - timedelta(hours=1))
    _event(session, ws, busy, "Form Submitted", later - timedelta(hours=1))
    result = rescore(later)

    assert (stored(quiet).as_of, stored(quiet).decay_key, history(quiet)) == first[quiet]
    assert result.changed == [busy]
    assert stored(busy).as_of == later and history(busy) == first[busy][2] + 1
    eng = service.explain(session, ws, quiet, later)["scores"]["engagement"]
    assert eng["score"] == pytest.approx(score_then * 2 ** (-6 / (30 * 24)), abs=1e-4)
    kept = service._now_value(stored(quiet), later)
    # and what was kept, read later, equals a recomputation written as of that moment
    session.execute(update(ContactScore).where(ContactScore.contact_id == quiet).values(explanation=[]))
    rescore(later)
    assert stored(quiet).as_of == later
    assert stored(quiet).score == pytest.approx(kept, rel=1e-12)
    assert history(quiet) == first[quiet][2]  # the same score: no history line
