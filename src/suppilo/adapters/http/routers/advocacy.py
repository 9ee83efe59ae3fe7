"""HTTP routes: advocacy — the referral programme, codes, attribution and leaderboard; surveys (send, results);
reviews (collect, moderate, export)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession, Writer
from suppilo.advocacy import service
from suppilo.advocacy.schemas import (
    AttributeIn,
    LeaderRow,
    ModerateIn,
    ProductRating,
    ReferralCodeRead,
    ReferralProgramIn,
    ReferralProgramRead,
    ReferralRead,
    ResponseRead,
    ReviewCreate,
    ReviewRead,
    RewardRead,
    SendIn,
    SendResult,
    SurveyCreate,
    SurveyRead,
    SurveyResults,
)
from suppilo.offers import codes

router = APIRouter(prefix="/api/v1", tags=["advocacy"])

Limit = Annotated[int, Query(ge=1, le=1000)]


def _public_url(request: Request) -> str:
    return str(request.app.state.settings.public_url)


# --- referrals --------------------------------------------------------------------------------------------------


@router.get("/referrals/program", response_model=ReferralProgramRead)
def read_program(principal: Reader, session: ReadSession) -> ReferralProgramRead:
    """The referral programme (disabled defaults until one is saved)."""
    return ReferralProgramRead.model_validate(service.get_program(session, principal.workspace_id))


@router.put("/referrals/program", response_model=ReferralProgramRead)
def put_program(data: ReferralProgramIn, principal: Admin, session: DbSession) -> ReferralProgramRead:
    """Save the programme: the stage that converts a referral and the reward of each side."""
    return ReferralProgramRead.model_validate(service.put_program(session, principal.workspace_id, data))


@router.post("/referrals/codes/{contact_id}", response_model=ReferralCodeRead)
def referral_code(contact_id: int, request: Request, principal: Writer, session: DbSession) -> ReferralCodeRead:
    """The contact's personal referral code and link (created on first call, the same afterwards)."""
    row = service.get_or_create_code(session, principal.workspace_id, contact_id)
    return ReferralCodeRead(
        contact_id=row.contact_id,
        code=row.code,
        display=codes.display(row.code),
        url=service.referral_url(_public_url(request), row.code),
    )


@router.post("/referrals/attribute", response_model=ReferralRead)
def attribute(data: AttributeIn, principal: Writer, session: DbSession) -> ReferralRead:
    """Attribute a contact to a code's owner; a refused attribution is stored and returned with its reason."""
    row = service.attribute(
        session, principal.workspace_id, code=data.code, referred_contact_id=data.contact_id, source="api"
    )
    return ReferralRead.model_validate(row)


@router.get("/referrals/leaderboard", response_model=list[LeaderRow])
def leaderboard(principal: Reader, session: ReadSession, limit: Limit = 50) -> list[LeaderRow]:
    """Referrers by converted referrals, then referrals; with refusals and the rewards they received."""
    return [LeaderRow.model_validate(r) for r in service.leaderboard(session, principal.workspace_id, limit=limit)]


@router.get("/referrals", response_model=list[ReferralRead])
def list_referrals(
    principal: Reader,
    session: ReadSession,
    status: Literal["attributed", "converted", "refused"] | None = None,
    referrer_id: int | None = None,
    limit: Limit = 100,
) -> list[ReferralRead]:
    """Referrals, newest first."""
    rows = service.list_referrals(session, principal.workspace_id, status=status, referrer_id=referrer_id, limit=limit)
    return [ReferralRead.model_validate(r) for r in rows]


@router.get("/referrals/{referral_id}/rewards", response_model=list[RewardRead])
def rewards(referral_id: int, principal: Reader, session: ReadSession) -> list[RewardRead]:
    """The rewards given for a referral (one per side)."""
    return [RewardRead.model_validate(r) for r in service.rewards_of(session, principal.workspace_id, referral_id)]


# --- surveys ----------------------------------------------------------------------------------------------------


@router.post("/surveys", response_model=SurveyRead, status_code=201)
def create_survey(data: SurveyCreate, principal: Writer, session: DbSession) -> SurveyRead:
    """A new NPS or CSAT survey."""
    return SurveyRead.model_validate(service.create_survey(session, principal.workspace_id, data))


@router.get("/surveys", response_model=list[SurveyRead])
def list_surveys(principal: Reader, session: ReadSession) -> list[SurveyRead]:
    return [SurveyRead.model_validate(s) for s in service.list_surveys(session, principal.workspace_id)]


@router.get("/surveys/{survey_id}", response_model=SurveyRead)
def get_survey(survey_id: int, principal: Reader, session: ReadSession) -> SurveyRead:
    return SurveyRead.model_validate(service.get_survey(session, principal.workspace_id, survey_id))


@router.post("/surveys/{survey_id}/send", response_model=SendResult)
def send(survey_id: int, data: SendIn, request: Request, principal: Writer, session: DbSession) -> SendResult:
    """Queue the survey mail for contacts (each contact once per survey)."""
    settings = request.app.state.settings
    out = service.send_survey(
        session,
        principal.workspace_id,
        survey_id,
        data.contact_ids,
        secret=settings.resolved_secret_key(),
        public_url=settings.public_url,
    )
    return SendResult.model_validate(out)


@router.get("/surveys/{survey_id}/results", response_model=SurveyResults)
def results(
    survey_id: int,
    principal: Reader,
    session: ReadSession,
    period: Literal["day", "week", "month", "quarter"] = "month",
    since: datetime | None = None,
    until: datetime | None = None,
) -> SurveyResults:
    """NPS = % promoters − % detractors (or the CSAT average), response rate, overall and per period."""
    out = service.results(session, principal.workspace_id, survey_id, period=period, since=since, until=until)
    return SurveyResults.model_validate(out)


@router.get("/surveys/{survey_id}/responses", response_model=list[ResponseRead])
def responses(survey_id: int, principal: Reader, session: ReadSession, limit: Limit = 500) -> list[ResponseRead]:
    """The answers with their comments, newest first."""
    rows = service.list_responses(session, principal.workspace_id, survey_id, limit=limit)
    return [ResponseRead.model_validate(r) for r in rows]


# --- reviews ----------------------------------------------------------------------------------------------------


@router.post("/reviews", response_model=ReviewRead, status_code=201)
def create_review(data: ReviewCreate, principal: Writer, session: DbSession, response: Response) -> ReviewRead:
    """A review (pending until approved); a repeated ``idempotency_key`` answers the first one with 200."""
    review, created = service.create_review(session, principal.workspace_id, data)
    if not created:
        response.status_code = 200
    return ReviewRead.model_validate(review)


@router.get("/reviews/export")
def export(
    principal: Reader, session: ReadSession, format: Literal["json", "csv"] = "json", product_sku: str | None = None
) -> Response:
    """Approved reviews for the website (names shortened), as JSON (with the averages per product) or CSV."""
    if format == "csv":
        body = service.export_csv(session, principal.workspace_id, product_sku=product_sku)
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="reviews.csv"'},
        )
    return Response(service.export_json(session, principal.workspace_id, product_sku=product_sku),
                    media_type="application/json")  # fmt: skip


@router.get("/reviews/products", response_model=list[ProductRating])
def product_ratings(principal: Reader, session: ReadSession) -> list[ProductRating]:
    """Average rating of approved reviews per product."""
    return [ProductRating.model_validate(r) for r in service.product_ratings(session, principal.workspace_id)]


@router.get("/reviews", response_model=list[ReviewRead])
def list_reviews(
    principal: Reader,
    session: ReadSession,
    status: Literal["pending", "approved", "rejected"] | None = None,
    product_sku: str | None = None,
    limit: Limit = 100,
) -> list[ReviewRead]:
    rows = service.list_reviews(session, principal.workspace_id, status=status, product_sku=product_sku, limit=limit)
    return [ReviewRead.model_validate(r) for r in rows]


@router.get("/reviews/{review_id}", response_model=ReviewRead)
def get_review(review_id: int, principal: Reader, session: ReadSession) -> ReviewRead:
    return ReviewRead.model_validate(service.get_review(session, principal.workspace_id, review_id))


@router.post("/reviews/{review_id}/approve", response_model=ReviewRead)
def approve(review_id: int, principal: Writer, session: DbSession) -> ReviewRead:
    """Publish a review; its author earns the loyalty 'review' bonus once."""
    review = service.approve(session, principal.workspace_id, review_id, actor=f"key:{principal.key_id}")
    return ReviewRead.model_validate(review)


@router.post("/reviews/{review_id}/reject", response_model=ReviewRead)
def reject(review_id: int, data: ModerateIn, principal: Writer, session: DbSession) -> ReviewRead:
    """Hide a review with the reason."""
    review = service.reject(session, principal.workspace_id, review_id, reason=data.reason,
                            actor=f"key:{principal.key_id}")  # fmt: skip
    return ReviewRead.model_validate(review)
