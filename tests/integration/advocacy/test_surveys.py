"""Surveys on the database: the mail through the outbox with signed links, answers recorded once, forged links
writing nothing, promoters and detractors, NPS and CSAT arithmetic by period."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from suppilo.advocacy import service
from suppilo.advocacy.models import SurveyResponse
from suppilo.advocacy.schemas import SurveyCreate
from suppilo.advocacy.surveys import SurveyClaim, link_token, score_token
from suppilo.contacts import service as contacts_service
from suppilo.deals.models import Task
from suppilo.errors import DomainError
from suppilo.events.models import Event
from suppilo.messaging import service as messaging_service
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.workspaces import service as workspaces_service
from tests.integration.advocacy.helpers import PUBLIC, SECRET, contact, unique_email


def _survey(session, ws: int, kind: str = "nps", **kw):
    return service.create_survey(session, ws, SurveyCreate(name=f"{kind} {secrets.token_hex(2)}", kind=kind, **kw))


def _answered(session, ws: int, name: str = "Survey Answered") -> list[Event]:
    return list(session.scalars(select(Event).where(Event.workspace_id == ws, Event.name == name)))


def test_mail_carries_signed_links_and_one_click_records_once(session, workspace) -> None:
    ws = workspace.id
    survey = _survey(session, ws)
    promoter = contact(session, ws, unique_email("p"), first_name="Anna", last_name="Korhonen")
    no_mail = contact(session, ws, None)
    out = service.send_survey(
        session, ws, survey.id, [promoter.id, no_mail.id, 10**9], secret=SECRET, public_url=PUBLIC
    )
    assert out == {"queued": 1, "skipped": {"no_email": 1, "unknown_contact": 1}}
    again = service.send_survey(session, ws, survey.id, [promoter.id], secret=SECRET, public_url=PUBLIC)
    assert again == {"queued": 0, "skipped": {"already_sent": 1}}
    row = session.scalar(select(OutboxMessage).where(OutboxMessage.workspace_id == ws))
    assert (row.template_key, row.dedupe_key) == ("nps_survey", f"survey:{survey.id}:{promoter.id}")
    # the default template renders one link per score from survey.url
    mail = messaging_service.render_for_contact(session, ws, "nps_survey", promoter.id, extra=row.extra)
    links = re.findall(r'href="(http://testserver/s/[^"]+)"', mail.html)
    assert len(links) == 11
    token, score = re.fullmatch(r"http://testserver/s/([^?]+)\?score=(\d+)", links[10].replace("&amp;", "&")).groups()
    assert score == "10"
    claim = service.parse_link(SECRET, token, score)
    assert claim == SurveyClaim(ws, survey.id, promoter.id, 10)
    first = service.record_answer(session, claim)
    assert first is not None and first[1] is True
    # a second click (even on another score) changes nothing: the first answer counts
    second = service.record_answer(session, service.parse_link(SECRET, token, "3"))
    assert second is not None and second[1] is False and second[0].score == 10
    assert session.scalar(select(func.count(SurveyResponse.id)).where(SurveyResponse.workspace_id == ws)) == 1
    events = _answered(session, ws)
    assert len(events) == 1
    assert events[0].properties == {
        "score": 10,
        "survey_id": survey.id,
        "kind": "nps",
        "comment": None,
        "category": "promoter",
    }
    # promoter: tagged and an advocate
    assert "promoter" in contacts_service.get_tags(session, ws, promoter.id)
    assert contacts_service.get_contact(session, ws, promoter.id).lifecycle_stage == "advocate"
    # a comment lands on the answer and as its own event
    assert service.add_comment(session, claim, "  Great tents!  ")
    assert session.scalar(select(SurveyResponse.comment).where(SurveyResponse.workspace_id == ws)) == "Great tents!"
    assert _answered(session, ws, "Survey Comment Added")[0].properties["comment"] == "Great tents!"


def test_forged_or_altered_links_write_nothing(session, workspace) -> None:
    ws = workspace.id
    survey = _survey(session, ws)
    person = contact(session, ws, unique_email("f"))
    good = score_token(SECRET, ws, survey.id, person.id, 9)
    assert service.parse_link(SECRET, good) == SurveyClaim(ws, survey.id, person.id, 9)
    head, mac = good.split(".")
    altered_mac = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    forged_payload = score_token("another-secret-" + "y" * 32, ws, survey.id, person.id, 10)
    for bad in (head + "." + altered_mac, forged_payload, good + "x", "", "a.b.c"):
        assert service.parse_link(SECRET, bad) is None
    # a score link's token cannot be replayed as an unsubscribe or click token, nor with another score
    base = link_token(SECRET, ws, survey.id, person.id)
    assert service.parse_link(SECRET, base) is None  # no score given
    assert service.parse_link(SECRET, base, "11") is None
    assert service.parse_link(SECRET, base, "-1") is None
    assert service.parse_link(SECRET, base, "7; drop") is None
    # signed, but naming a survey of nobody / a score off a CSAT scale: nothing is recorded
    assert service.record_answer(session, SurveyClaim(ws, 10**9, person.id, 9)) is None
    csat = _survey(session, ws, "csat", template_key="nps_survey")
    assert service.record_answer(session, SurveyClaim(ws, csat.id, person.id, 0)) is None
    assert service.record_answer(session, SurveyClaim(ws + 10**6, survey.id, person.id, 9)) is None
    assert session.scalar(select(func.count(SurveyResponse.id)).where(SurveyResponse.workspace_id == ws)) == 0
    assert _answered(session, ws) == []


def test_detractor_creates_a_follow_up_task_for_the_owner(session, workspace) -> None:
    ws = workspace.id
    user = workspaces_service.create_user(session, email=unique_email("rep"), name="Rep", password_hash=None)
    workspaces_service.add_member(session, ws, user.id, "sales")
    survey = _survey(session, ws, followup_days=1)
    unhappy = contact(session, ws, unique_email("d"), first_name="Bo", owner_id=user.id)
    passive = contact(session, ws, unique_email("p"))
    service.record_answer(session, SurveyClaim(ws, survey.id, unhappy.id, 3))
    service.record_answer(session, SurveyClaim(ws, survey.id, passive.id, 7))
    tasks = session.scalars(select(Task).where(Task.workspace_id == ws)).all()
    assert len(tasks) == 1
    task = tasks[0]
    assert (task.contact_id, task.owner_id, task.kind) == (unhappy.id, user.id, "call")
    assert task.title.startswith("NPS 3/10 from Bo")
    assert "promoter" not in contacts_service.get_tags(session, ws, passive.id)
    assert contacts_service.get_contact(session, ws, passive.id).lifecycle_stage == "interest"
    # a repeated click does not add a second task
    service.record_answer(session, SurveyClaim(ws, survey.id, unhappy.id, 3))
    assert session.scalar(select(func.count(Task.id)).where(Task.workspace_id == ws)) == 1


def test_nps_arithmetic_response_rate_and_periods(session, workspace) -> None:
    ws = workspace.id
    survey = _survey(session, ws)
    people = [contact(session, ws, unique_email(f"n{i}")) for i in range(12)]
    service.send_survey(session, ws, survey.id, [p.id for p in people], secret=SECRET, public_url=PUBLIC)
    scores = [10, 10, 9, 8, 7, 6, 5, 0, 10, 9]  # 5 promoters, 2 passives, 3 detractors
    for i, (p, s) in enumerate(zip(people, scores, strict=False)):
        month = 1 if i < 4 else 2
        service.record_answer(session, SurveyClaim(ws, survey.id, p.id, s), now=datetime(2030, month, 5, tzinfo=UTC))
    res = service.results(session, ws, survey.id, period="month")
    assert (res["sent"], res["responses"], res["response_rate"]) == (12, 10, 83.3)
    assert (res["promoters"], res["passives"], res["detractors"], res["nps"]) == (5, 2, 3, 20.0)
    by = {p["period"]: p for p in res["periods"] if p["responses"]}
    assert by["2030-01"]["nps"] == 75.0  # 10, 10, 9, 8: 3 promoters of 4
    assert by["2030-02"]["nps"] == round(100 * (2 - 3) / 6, 1)  # 7, 6, 5, 0, 10, 9
    only_feb = service.results(
        session, ws, survey.id, since=datetime(2030, 2, 1, tzinfo=UTC), until=datetime(2030, 3, 1, tzinfo=UTC)
    )
    assert (only_feb["responses"], only_feb["nps"]) == (6, -16.7)
    assert service.nps_of([]) is None and service.nps_of([0, 0]) == -100.0 and service.nps_of([9, 10]) == 100.0
    with pytest.raises(DomainError):
        service.results(session, ws, survey.id, period="year")


def test_csat_average_and_dissatisfied_follow_up(session, workspace) -> None:
    ws = workspace.id
    with pytest.raises(DomainError) as err:
        _survey(session, ws, "csat")
    assert err.value.code == "template_required"
    survey = _survey(session, ws, "csat", template_key="nps_survey")
    people = [contact(session, ws, unique_email(f"c{i}")) for i in range(4)]
    for p, s in zip(people, [5, 4, 2, 1], strict=True):
        service.record_answer(session, SurveyClaim(ws, survey.id, p.id, s))
    res = service.results(session, ws, survey.id)
    assert (res["csat_average"], res["csat_satisfied_percent"], res["nps"]) == (3.0, 50.0, None)
    assert session.scalar(select(func.count(Task.id)).where(Task.workspace_id == ws)) == 2
    props = sorted(e.properties["score"] for e in _answered(session, ws))
    assert props == [1, 2, 4, 5] and {e.properties["kind"] for e in _answered(session, ws)} == {"csat"}
    # CSAT 5 is no NPS promoter: the advocate playbook (score > 8) cannot fire, and no tag is added
    assert "promoter" not in contacts_service.get_tags(session, ws, people[0].id)
