"""NPS (0–10) and CSAT (1–5) surveys: queued through the outbox, answered by a signed one-click link, with the
effects a promoter or a detractor should have, and the results (NPS, CSAT average, response rate) by period.

A link is ``/s/{token}`` where the token is signed with the installation secret (``messaging.unsubscribe``'s
helper, purpose ``survey-score``) and carries the workspace, survey, contact and score; the default ``nps_survey``
template appends ``?score=N`` to ``survey.url``, whose token (purpose ``survey``) carries the workspace, survey and
contact, and the score is then the recipient's choice among the links. An altered or forged token writes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from suppilo.advocacy.models import Survey, SurveyRequest, SurveyResponse
from suppilo.advocacy.schemas import SurveyCreate
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.errors import DomainError, NotFound
from suppilo.events import service as events_service
from suppilo.messaging.unsubscribe import sign_token, verify_token

SCALES = {"nps": (0, 10), "csat": (1, 5)}
PERIODS = ("day", "week", "month", "quarter")
ANSWER_EVENT = "Survey Answered"
COMMENT_EVENT = "Survey Comment Added"


class SurveyError(DomainError):
    """A refused survey operation."""


def _settings(secret: str | None, public_url: str | None) -> tuple[str, str]:
    if secret is None or public_url is None:
        from suppilo.config import get_settings

        cfg = get_settings()
        secret = secret if secret is not None else cfg.resolved_secret_key()
        public_url = public_url if public_url is not None else cfg.public_url
    return secret, public_url.rstrip("/")


# --- definitions ------------------------------------------------------------------------------------------------


def create_survey(session: Session, workspace_id: int, data: SurveyCreate) -> Survey:
    """A survey; an NPS survey uses the ``nps_survey`` template unless told otherwise, a CSAT survey names its own."""
    template_key = data.template_key or ("nps_survey" if data.kind == "nps" else None)
    if template_key is None:
        raise SurveyError("template_key", "a CSAT survey needs a template (the default nps_survey asks 0-10)",
                          code="template_required")  # fmt: skip
    survey = Survey(
        workspace_id=workspace_id,
        name=data.name,
        kind=data.kind,
        template_key=template_key,
        followup_days=data.followup_days,
        ask_review=data.ask_review,
        created_at=utcnow(),
    )
    session.add(survey)
    session.flush()
    return survey


def get_survey(session: Session, workspace_id: int, survey_id: int) -> Survey:
    survey = session.scalar(select(Survey).where(Survey.workspace_id == workspace_id, Survey.id == survey_id))
    if survey is None:
        raise NotFound("survey_id", f"survey {survey_id} not found")
    return survey


def list_surveys(session: Session, workspace_id: int) -> list[Survey]:
    return list(session.scalars(select(Survey).where(Survey.workspace_id == workspace_id).order_by(Survey.id)))


# --- links ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SurveyClaim:
    """What a valid survey link says: this contact answers this survey with this score."""

    workspace_id: int
    survey_id: int
    contact_id: int
    score: int


def link_token(secret: str, workspace_id: int, survey_id: int, contact_id: int) -> str:
    """The token of ``survey.url`` (the score comes as ``?score=N``)."""
    return sign_token(secret, "survey", (workspace_id, survey_id, contact_id))


def score_token(secret: str, workspace_id: int, survey_id: int, contact_id: int, score: int) -> str:
    """The token of a one-click link whose score is signed too."""
    return sign_token(secret, "survey-score", (workspace_id, survey_id, contact_id, score))


def parse_link(secret: str, token: str, score: str | int | None = None) -> SurveyClaim | None:
    """The claim of a valid link, or None (forged, altered, or a score outside 0–10)."""
    fields = verify_token(secret, "survey-score", token, 4)
    if fields is not None:
        return SurveyClaim(*fields) if 0 <= fields[3] <= 10 else None
    fields = verify_token(secret, "survey", token, 3)
    if fields is None or score is None:
        return None
    text = str(score).strip()
    if not text.isdigit() or len(text) > 2:
        return None
    value = int(text)
    return SurveyClaim(fields[0], fields[1], fields[2], value) if 0 <= value <= 10 else None


def links_for(secret: str, public_url: str, survey: Survey, contact_id: int) -> dict[str, Any]:
    """The ``survey`` template variable for a contact."""
    low, high = SCALES[survey.kind]
    base = f"{public_url.rstrip('/')}/s/"
    ws = survey.workspace_id
    return {
        "id": survey.id,
        "name": survey.name,
        "kind": survey.kind,
        "min": low,
        "max": high,
        "url": base + link_token(secret, ws, survey.id, contact_id),
        "links": [
            {"score": s, "url": base + score_token(secret, ws, survey.id, contact_id, s)} for s in range(low, high + 1)
        ],
    }


# --- sending ----------------------------------------------------------------------------------------------------


def send_survey(
    session: Session,
    workspace_id: int,
    survey_id: int,
    contact_ids: list[int],
    *,
    secret: str | None = None,
    public_url: str | None = None,
) -> dict[str, Any]:
    """Queue the survey mail for each contact (once per survey and contact) through the outbox; the outbox's sender
    applies consent and suppression. Returns ``{"queued": n, "skipped": {reason: n}}``."""
    from suppilo.messaging import outbox
    from suppilo.messaging import service as messaging_service

    survey = get_survey(session, workspace_id, survey_id)
    messaging_service.get_template_by_key(session, workspace_id, survey.template_key)
    secret, public_url = _settings(secret, public_url)
    wanted = sorted(set(contact_ids))
    contacts = {
        c.id: c
        for c in session.scalars(select(Contact).where(Contact.workspace_id == workspace_id, Contact.id.in_(wanted)))
    }
    sent = set(
        session.scalars(
            select(SurveyRequest.contact_id).where(
                SurveyRequest.workspace_id == workspace_id,
                SurveyRequest.survey_id == survey.id,
                SurveyRequest.contact_id.in_(wanted),
            )
        )
    )
    skipped: dict[str, int] = defaultdict(int)
    queued = 0
    now = utcnow()
    ins = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(SurveyRequest)
    for cid in wanted:
        contact = contacts.get(cid)
        if contact is None:
            skipped["unknown_contact"] += 1
            continue
        if not contact.email:
            skipped["no_email"] += 1
            continue
        if cid in sent:
            skipped["already_sent"] += 1
            continue
        message = outbox.enqueue(
            session,
            workspace_id,
            dedupe_key=f"survey:{survey.id}:{cid}",
            contact_id=cid,
            template_key=survey.template_key,
            extra={"survey": links_for(secret, public_url, survey, cid)},
        )
        session.execute(
            ins.values(
                workspace_id=workspace_id,
                survey_id=survey.id,
                contact_id=cid,
                outbox_id=message.id if message else None,
                sent_at=now,
            ).on_conflict_do_nothing()
        )
        queued += 1
    session.flush()
    return {"queued": queued, "skipped": dict(skipped)}


# --- answers ----------------------------------------------------------------------------------------------------


def resolve_claim(session: Session, claim: SurveyClaim) -> tuple[Survey, Contact] | None:
    """The survey and contact of a valid claim, or None when either is gone or the score is off the scale."""
    survey = session.scalar(
        select(Survey).where(Survey.workspace_id == claim.workspace_id, Survey.id == claim.survey_id)
    )
    if survey is None:
        return None
    low, high = SCALES[survey.kind]
    if not low <= claim.score <= high:
        return None
    contact = session.scalar(
        select(Contact).where(Contact.workspace_id == claim.workspace_id, Contact.id == claim.contact_id)
    )
    return (survey, contact) if contact is not None else None


def category(kind: str, score: int) -> str:
    """promoter / passive / detractor (NPS) or satisfied / neutral / dissatisfied (CSAT)."""
    if kind == "nps":
        return "promoter" if score >= 9 else "detractor" if score <= 6 else "passive"
    return "satisfied" if score >= 4 else "dissatisfied" if score <= 2 else "neutral"


def record_answer(
    session: Session, claim: SurveyClaim, *, now: datetime | None = None
) -> tuple[SurveyResponse, bool] | None:
    """Store the answer of a valid claim once (the first click counts) and apply its effects: the
    ``Survey Answered`` event; for a promoter the ``promoter`` tag and the ``advocate`` stage (when the workspace
    has it); for a detractor (NPS 0–6, CSAT 1–2) a follow-up task for the contact's owner.
    Returns (response, created) or None when the claim names nothing that exists."""
    found = resolve_claim(session, claim)
    if found is None:
        return None
    survey, contact = found
    now = now or utcnow()
    ws = claim.workspace_id
    ins = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(SurveyResponse)
    new_id = session.execute(
        ins.values(workspace_id=ws, survey_id=survey.id, contact_id=contact.id, score=claim.score, answered_at=now)
        .on_conflict_do_nothing()
        .returning(SurveyResponse.id)
    ).scalar()
    response = session.scalar(
        select(SurveyResponse).where(
            SurveyResponse.workspace_id == ws,
            SurveyResponse.survey_id == survey.id,
            SurveyResponse.contact_id == contact.id,
        )
    )
    assert response is not None
    if new_id is None:
        return response, False
    events_service.record_event(
        session, ws, contact.id, ANSWER_EVENT,
        {"score": claim.score, "survey_id": survey.id, "kind": survey.kind, "comment": None,
         "category": category(survey.kind, claim.score)},
        now, message_id=f"survey-answer:{survey.id}:{contact.id}",
    )  # fmt: skip
    group = category(survey.kind, claim.score)
    if survey.kind == "nps" and group == "promoter":
        contacts_service.add_tags(session, ws, contact.id, ["promoter"])
        specs = contacts_service.stage_specs(session, ws)
        if any(s.key == "advocate" for s in specs) and contact.lifecycle_stage != "advocate":
            contacts_service.change_stage(
                session, contact, "advocate", reason=f"NPS promoter (score {claim.score}, survey {survey.id})",
                source="rule", at=now, stages=specs,
            )  # fmt: skip
    elif group in ("detractor", "dissatisfied"):
        _follow_up(session, survey, contact, claim.score, now)
    return response, True


def _follow_up(session: Session, survey: Survey, contact: Contact, score: int, now: datetime) -> None:
    from suppilo.deals import service as deals_service
    from suppilo.deals.schemas import TaskCreate

    who = " ".join(x for x in (contact.first_name, contact.last_name) if x) or contact.email or f"contact {contact.id}"
    label = "NPS" if survey.kind == "nps" else "CSAT"
    deals_service.create_task(
        session,
        contact.workspace_id,
        TaskCreate(
            title=f"{label} {score}/{SCALES[survey.kind][1]} from {who}: follow up ({survey.name})"[:300],
            kind="call",
            due_at=now + timedelta(days=survey.followup_days, minutes=1),
            contact_id=contact.id,
            owner_id=contact.owner_id,
        ),
        now=now,
    )


def add_comment(session: Session, claim: SurveyClaim, comment: str, *, now: datetime | None = None) -> bool:
    """Attach a comment to the claim's answer (the last comment wins; one ``Survey Comment Added`` event per text).
    False when there is no answer to comment on."""
    found = resolve_claim(session, claim)
    text = comment.strip()[:5000]
    if found is None or not text:
        return False
    survey, contact = found
    response = session.scalar(
        select(SurveyResponse).where(
            SurveyResponse.workspace_id == claim.workspace_id,
            SurveyResponse.survey_id == survey.id,
            SurveyResponse.contact_id == contact.id,
        )
    )
    if response is None:
        return False
    if response.comment == text:
        return True
    response.comment = text
    session.flush()
    events_service.record_event(
        session, claim.workspace_id, contact.id, COMMENT_EVENT,
        {"score": response.score, "survey_id": survey.id, "kind": survey.kind, "comment": text},
        now or utcnow(),
    )  # fmt: skip
    return True


def list_responses(session: Session, workspace_id: int, survey_id: int, *, limit: int = 500) -> list[SurveyResponse]:
    get_survey(session, workspace_id, survey_id)
    return list(
        session.scalars(
            select(SurveyResponse)
            .where(SurveyResponse.workspace_id == workspace_id, SurveyResponse.survey_id == survey_id)
            .order_by(SurveyResponse.answered_at.desc(), SurveyResponse.id.desc())
            .limit(limit)
        )
    )


# --- results ----------------------------------------------------------------------------------------------------


def period_of(at: datetime, period: str) -> str:
    if period == "day":
        return at.date().isoformat()
    if period == "week":
        year, week, _ = at.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "quarter":
        return f"{at.year}-Q{(at.month - 1) // 3 + 1}"
    return f"{at.year}-{at.month:02d}"


def nps_of(scores: list[int]) -> float | None:
    """% promoters (9–10) − % detractors (0–6), one decimal; None without answers."""
    if not scores:
        return None
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    return round(100.0 * (promoters - detractors) / len(scores), 1)


def _avg(scores: list[int]) -> float | None:
    return round(sum(scores) / len(scores), 2) if scores else None


def results(
    session: Session,
    workspace_id: int,
    survey_id: int,
    *,
    period: str = "month",
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """NPS (or CSAT average and % satisfied), counts and the response rate, overall and per period (answers by
    their time, mails by when they were queued)."""
    if period not in PERIODS:
        raise SurveyError("period", f"period must be one of {', '.join(PERIODS)}", code="invalid_period")
    survey = get_survey(session, workspace_id, survey_id)
    rq = select(SurveyResponse.score, SurveyResponse.answered_at).where(
        SurveyResponse.workspace_id == workspace_id, SurveyResponse.survey_id == survey.id
    )
    sq = select(SurveyRequest.sent_at).where(
        SurveyRequest.workspace_id == workspace_id, SurveyRequest.survey_id == survey.id
    )
    if since is not None:
        rq, sq = rq.where(SurveyResponse.answered_at >= since), sq.where(SurveyRequest.sent_at >= since)
    if until is not None:
        rq, sq = rq.where(SurveyResponse.answered_at < until), sq.where(SurveyRequest.sent_at < until)
    answers = [(int(s), at) for s, at in session.execute(rq)]
    sent_times = list(session.scalars(sq))
    scores = [s for s, _ in answers]
    by_period: dict[str, list[int]] = defaultdict(list)
    for s, at in answers:
        by_period[period_of(at, period)].append(s)
    sent_by: dict[str, int] = defaultdict(int)
    for at in sent_times:
        sent_by[period_of(at, period)] += 1
    nps = survey.kind == "nps"
    return {
        "survey_id": survey.id,
        "kind": survey.kind,
        "sent": len(sent_times),
        "responses": len(scores),
        "response_rate": round(100.0 * len(scores) / len(sent_times), 1) if sent_times else None,
        "promoters": sum(1 for s in scores if s >= 9) if nps else 0,
        "passives": sum(1 for s in scores if 7 <= s <= 8) if nps else 0,
        "detractors": sum(1 for s in scores if s <= 6) if nps else 0,
        "nps": nps_of(scores) if nps else None,
        "csat_average": None if nps else _avg(scores),
        "csat_satisfied_percent": (
            None if nps or not scores else round(100.0 * sum(1 for s in scores if s >= 4) / len(scores), 1)
        ),
        "periods": [
            {
                "period": key,
                "sent": sent_by.get(key, 0),
                "responses": len(by_period.get(key, [])),
                "nps": nps_of(by_period.get(key, [])) if nps else None,
                "csat_average": None if nps else _avg(by_period.get(key, [])),
            }
            for key in sorted(set(by_period) | set(sent_by))
        ],
    }


def response_count(session: Session, workspace_id: int, survey_id: int) -> int:
    return int(
        session.scalar(
            select(func.count(SurveyResponse.id)).where(
                SurveyResponse.workspace_id == workspace_id, SurveyResponse.survey_id == survey_id
            )
        )
        or 0
    )
