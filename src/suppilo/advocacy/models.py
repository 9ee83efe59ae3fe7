"""Tables of the referral programme, surveys and reviews."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin
from suppilo.db.types import JSONType, UTCDateTime


class ReferralProgram(TenantMixin, Base):
    """The workspace's referral programme: when a referral counts as converted and what each side receives."""

    __tablename__ = "referral_programs"
    __table_args__ = (UniqueConstraint("workspace_id"),)

    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    reward_stage: Mapped[str] = mapped_column(String(32), nullable=False, default="customer")
    # {"kind": "points", "points": 500 | None (the loyalty bonus for "referral")} or {"kind": "coupon", "offer_key": k}
    referrer_reward: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    referred_reward: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    max_rewards_per_referrer: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ReferralCode(TenantMixin, Base):
    """An advocate's personal referral code. No foreign key: a code shared before its owner was merged into another
    contact keeps working for the contact it became (``contact_merges``)."""

    __tablename__ = "referral_codes"
    __table_args__ = (UniqueConstraint("workspace_id", "code"), UniqueConstraint("workspace_id", "contact_id"))

    contact_id: Mapped[int] = mapped_column(BigId, nullable=False)
    code: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Referral(TenantMixin, Base):
    """An attribution of a contact to a referrer (``attributed`` → ``converted``), or a refused one with its reason.

    Contact ids carry no foreign key: a merged contact's referrals are found through ``contact_merges``."""

    __tablename__ = "referrals"
    __table_args__ = (
        Index(
            "uq_referrals_referred",
            "workspace_id",
            "referred_id",
            unique=True,
            sqlite_where=text("status != 'refused'"),
            postgresql_where=text("status != 'refused'"),
        ),
        Index("ix_referrals_referrer", "workspace_id", "referrer_id"),
    )

    referrer_id: Mapped[int] = mapped_column(BigId, nullable=False)
    referred_id: Mapped[int] = mapped_column(BigId, nullable=False)
    code: Mapped[str] = mapped_column(String(16), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ReferralReward(TenantMixin, Base):
    """A reward given (or failed to be given) for a converted referral: one per referral and side."""

    __tablename__ = "referral_rewards"
    __table_args__ = (UniqueConstraint("workspace_id", "referral_id", "recipient"),)

    referral_id: Mapped[int] = mapped_column(BigId, ForeignKey("referrals.id", ondelete="CASCADE"), nullable=False)
    recipient: Mapped[str] = mapped_column(String(16), nullable=False)
    contact_id: Mapped[int] = mapped_column(BigId, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    points: Mapped[int | None] = mapped_column(Integer)
    coupon_code: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Survey(TenantMixin, Base):
    """An NPS (0–10) or CSAT (1–5) survey sent by mail and answered by one click."""

    __tablename__ = "surveys"

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    template_key: Mapped[str] = mapped_column(String(100), nullable=False)
    followup_days: Mapped[int] = mapped_column(Integer, nullable=False, default=2)
    ask_review: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class SurveyRequest(TenantMixin, Base):
    """A survey mail queued for a contact (one per survey and contact)."""

    __tablename__ = "survey_requests"
    __table_args__ = (UniqueConstraint("workspace_id", "survey_id", "contact_id"),)

    survey_id: Mapped[int] = mapped_column(BigId, ForeignKey("surveys.id", ondelete="CASCADE"), nullable=False)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    outbox_id: Mapped[int | None] = mapped_column(BigId)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class SurveyResponse(TenantMixin, Base):
    """A contact's answer to a survey (the first click counts), with an optional comment."""

    __tablename__ = "survey_responses"
    __table_args__ = (
        UniqueConstraint("workspace_id", "survey_id", "contact_id"),
        Index("ix_survey_responses_time", "workspace_id", "survey_id", "answered_at"),
    )

    survey_id: Mapped[int] = mapped_column(BigId, ForeignKey("surveys.id", ondelete="CASCADE"), nullable=False)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    score: Mapped[int] = mapped_column(Integer, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Review(TenantMixin, Base):
    """A review with a rating (1–5) and text, moderated before it is shown."""

    __tablename__ = "reviews"
    __table_args__ = (
        UniqueConstraint("workspace_id", "dedupe_key"),
        Index("ix_reviews_status", "workspace_id", "status", "created_at"),
    )

    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    product_sku: Mapped[str | None] = mapped_column(String(100))
    rating: Mapped[int] = mapped_column(Integer, nullable=False)
    title: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    author_name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    reason: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(32), nullable=False, default="api")
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    moderated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    moderated_by: Mapped[str | None] = mapped_column(String(200))
