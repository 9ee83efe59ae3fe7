"""Shapes of the advocacy API: the referral programme, referrals, surveys, results and reviews."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Key = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.:\-]*$")]


class RewardSpec(BaseModel):
    """What one side of a converted referral receives: loyalty points or a coupon of an offer."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["points", "coupon"]
    points: int | None = Field(default=None, ge=1, le=1_000_000, description="None: the loyalty 'referral' bonus")
    offer_key: Key | None = None

    @model_validator(mode="after")
    def _shape(self) -> RewardSpec:
        if self.kind == "coupon" and not self.offer_key:
            raise ValueError("a coupon reward needs offer_key")
        if self.kind == "points" and self.offer_key:
            raise ValueError("a points reward takes no offer_key")
        return self


class ReferralProgramIn(BaseModel):
    """The referral programme of the workspace."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    reward_stage: str = Field(default="customer", min_length=1, max_length=32)
    referrer_reward: RewardSpec | None = None
    referred_reward: RewardSpec | None = None
    max_rewards_per_referrer: int | None = Field(default=None, ge=1)


class ReferralProgramRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    enabled: bool
    reward_stage: str
    referrer_reward: RewardSpec | None
    referred_reward: RewardSpec | None
    max_rewards_per_referrer: int | None


class ReferralCodeRead(BaseModel):
    contact_id: int
    code: str
    display: str
    url: str


class AttributeIn(BaseModel):
    """Attribute a contact to the owner of a referral code."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=40)
    contact_id: int


class ReferralRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    referrer_id: int
    referred_id: int
    code: str
    source: str
    status: str
    reason: str | None
    detail: str | None
    created_at: datetime
    converted_at: datetime | None


class RewardRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    referral_id: int
    recipient: str
    contact_id: int
    kind: str
    status: str
    points: int | None
    coupon_code: str | None
    error: str | None
    created_at: datetime


class LeaderRow(BaseModel):
    contact_id: int
    email: str | None
    name: str
    referrals: int
    converted: int
    refused: int
    rewards: int
    reward_points: int


class SurveyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["nps", "csat"] = "nps"
    template_key: Key | None = Field(default=None, description="nps_survey for NPS; required for CSAT")
    followup_days: int = Field(default=2, ge=0, le=60)
    ask_review: bool = True


class SurveyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    template_key: str
    followup_days: int
    ask_review: bool
    created_at: datetime


class ResponseRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    contact_id: int
    score: int
    comment: str | None
    answered_at: datetime


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_ids: list[int] = Field(min_length=1, max_length=10_000)


class SendResult(BaseModel):
    queued: int
    skipped: dict[str, int]


class PeriodResult(BaseModel):
    period: str
    sent: int
    responses: int
    nps: float | None
    csat_average: float | None


class SurveyResults(BaseModel):
    survey_id: int
    kind: str
    sent: int
    responses: int
    response_rate: float | None
    promoters: int
    passives: int
    detractors: int
    nps: float | None
    csat_average: float | None
    csat_satisfied_percent: float | None
    periods: list[PeriodResult]


class ReviewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: int | None = None
    author_name: str | None = Field(default=None, max_length=200)
    product_sku: str | None = Field(default=None, min_length=1, max_length=100)
    rating: int = Field(ge=1, le=5)
    title: str | None = Field(default=None, max_length=200)
    text: str = Field(default="", max_length=10_000)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class ModerateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


class ReviewRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    contact_id: int | None
    product_sku: str | None
    rating: int
    title: str | None
    text: str
    author_name: str
    status: str
    reason: str | None
    source: str
    created_at: datetime
    moderated_at: datetime | None


class ProductRating(BaseModel):
    product_sku: str
    reviews: int
    average: float
