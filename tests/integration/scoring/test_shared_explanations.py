"""Fit explanations are stored once per distinct text (``score_explanations``) and referenced by the score rows;
what a user reads (the contact's fit criteria, via the service the API, CLI and web page call) stays right after a
full set-based rescoring, after one contact's update, and for rows written before explanations were shared."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from suppilo.companies import service as companies_service
from suppilo.companies.schemas import CompanyCreate
from suppilo.contacts import service as contacts_service
from suppilo.contacts.schemas import ContactCreate, ContactUpdate
from suppilo.scoring import bulk, service
from suppilo.scoring.models import ContactScore, ScoreExplanation
from suppilo.scoring.schemas import IcpCreate

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ICP = {
    "industries": {"values": ["Software"], "weight": 30},
    "employees": {"min": 10, "max": 500, "weight": 30},
    "location": {"regions": ["nordics"], "weight": 20},
    "seniority": {"keywords": ["head", "director"], "weight": 20},
}
HEAD = [
    "industry 'Software' is one of Software",
    "50 employees (within 10–500)",
    "country SE is in nordics",
    "seniority in the job title: 'Head of Marketing' has 'head'",
]


def _people(session, ws: int, n: int) -> list[int]:
    company = companies_service.create_company(
        session, ws, CompanyCreate(name="Acme", domain="acme.example", industry="Software", employees=50, country="FI")
    ).id
    titles = ["Head of Marketing", "Engineer"]
    return [
        contacts_service.create_contact(
            session,
            ws,
            ContactCreate(email=f"p{i}@person.example", job_title=titles[i % 2], country="SE", company_id=company),
        ).id
        for i in range(n)
    ]


def _criteria(session, ws: int, cid: int, now: datetime = NOW) -> list[str]:
    return [c["detail"] for c in service.explain(session, ws, cid, now)["scores"]["fit"]["criteria"]]


def _shared(session, ws: int) -> int:
    return session.scalar(select(func.count()).select_from(ScoreExplanation).where(ScoreExplanation.workspace_id == ws))


def test_contacts_with_the_same_facts_share_one_explanation_after_a_full_rescoring(session, workspace):
    ws = workspace.id
    ids = _people(session, ws, 12)
    service.create_icp(session, ws, IcpCreate(name="Core", definition=ICP))
    result = bulk.rescore_all(session, ws, ("fit",), NOW)
    assert result["fit"].scored == 12
    assert _shared(session, ws) == 2  # heads and engineers
    assert _criteria(session, ws, ids[0]) == HEAD
    assert _criteria(session, ws, ids[1])[3] == "seniority in the job title: 'Engineer' has none of head, director"
    rows = session.execute(
        select(ContactScore.explanation, ContactScore.explanation_id).where(
            ContactScore.workspace_id == ws, ContactScore.kind == "fit"
        )
    ).all()
    assert len(rows) == 12 and all(r.explanation == [] for r in rows)
    assert len({r.explanation_id for r in rows}) == 2


def test_explanation_follows_one_contact_update_on_both_paths(session, workspace):
    ws = workspace.id
    ids = _people(session, ws, 4)
    service.create_icp(session, ws, IcpCreate(name="Core", definition=ICP))
    bulk.rescore_all(session, ws, ("fit",), NOW)
    later = NOW + timedelta(hours=1)
    contacts_service.update_contact(session, ws, ids[0], ContactUpdate(job_title="Director of Sales"))
    changed = service.recompute_fit(session, ws, [ids[0]], later)  # the per-contact path (API with contact_ids)
    assert changed.changed == []  # same score and grade: no history line, but the explanation is new
    assert _criteria(session, ws, ids[0], later)[3] == "seniority in the job title: 'Director of Sales' has 'director'"
    assert _criteria(session, ws, ids[2], later) == HEAD  # the others keep the shared one
    assert _shared(session, ws) == 3
    # and back through the set-based path: the stored text is found again, not duplicated
    contacts_service.update_contact(session, ws, ids[0], ContactUpdate(job_title="Head of Marketing"))
    bulk.bulk_fit(session, ws, [ids[0]], later + timedelta(hours=1))
    assert _criteria(session, ws, ids[0], later) == HEAD
    assert _shared(session, ws) == 3
    history = service.score_history(session, ws, ids[0], "fit")
    assert [(h.score, h.grade) for h in history] == [(100.0, "A")]


def test_a_row_with_its_explanation_inline_is_read_and_then_moved_to_the_shared_store(session, workspace):
    ws = workspace.id
    (cid,) = _people(session, ws, 1)
    icp = service.create_icp(session, ws, IcpCreate(name="Core", definition=ICP)).id
    inline = [{"criterion": "industries", "matched": True, "points": 30.0, "max_points": 30.0, "detail": "old text"}]
    session.execute(
        insert(ContactScore).values(
            workspace_id=ws, contact_id=cid, kind="fit", score=100.0, grade="A", icp_id=icp, explanation=inline,
            state={}, as_of=NOW, computed_at=NOW,
        )
    )  # fmt: skip
    assert _criteria(session, ws, cid) == ["old text"]
    bulk.rescore_all(session, ws, ("fit",), NOW)
    assert _criteria(session, ws, cid) == HEAD
    assert service.score_history(session, ws, cid, "fit") == []  # score and grade unchanged


def test_rows_read_as_new_but_added_meanwhile_are_replaced_not_failed(session, workspace) -> None:
    """The set-based writer copies rows of contacts that had no score row straight into the table; if another writer
    added one in between (a live event, a second run), the write still succeeds and the newer row wins."""
    ws = workspace.id
    cid = _people(session, ws, 1)[0]
    service.create_icp(session, ws, IcpCreate(name="icp", definition=ICP))
    bulk.bulk_fit(session, ws, None, NOW)  # the contact's fit row now exists
    later = NOW + timedelta(hours=1)
    stamp = bulk._time_text(session, later)
    row = (ws, cid, "fit", 12.5, "D", None, "[]", None, "{}", None, None, stamp, stamp)
    other = contacts_service.create_contact(session, ws, ContactCreate(email="new@person.example")).id
    new_row = (ws, other, "fit", 40.0, "C", None, "[]", None, "{}", None, None, stamp, stamp)
    bulk.write_scores(session, [], [row, new_row])
    stored = dict(
        session.execute(
            select(ContactScore.contact_id, ContactScore.score).where(
                ContactScore.workspace_id == ws, ContactScore.kind == "fit"
            )
        ).all()
    )
    assert stored == {cid: 12.5, other: 40.0}
    assert session.scalar(select(func.count()).select_from(ContactScore).where(ContactScore.workspace_id == ws)) == 2
