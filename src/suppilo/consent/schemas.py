"""Pydantic shapes of consent records and decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LegalBasis = Literal["consent", "legitimate_interest", "contract", "implied_purchase", "implied_inquiry"]
Action = Literal["granted", "withdrawn", "objection"]


class ConsentCreate(BaseModel):
    """A statement to append to a contact's ledger."""

    action: Action = "granted"
    topic: str = Field(default="marketing", min_length=1, max_length=64, pattern=r"^[a-z0-9_\-*]+$")
    channel: Literal["email"] = "email"
    legal_basis: LegalBasis = "consent"
    source: str = Field(default="api", max_length=200)
    source_url: str | None = Field(default=None, max_length=2000)
    consent_text: str | None = Field(default=None, max_length=10000)
    consent_version: str | None = Field(default=None, max_length=32)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=500)
    evidence_at: datetime | None = None
    confirmed: bool = Field(default=False, description="The person already confirmed (double opt-in done elsewhere).")


class ConsentRead(BaseModel):
    """One ledger record."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    contact_id: int
    channel: str
    topic: str
    action: str
    legal_basis: str
    source: str
    source_url: str | None
    consent_text: str | None
    consent_version: str | None
    ip: str | None
    user_agent: str | None
    recorded_at: datetime
    evidence_at: datetime | None
    confirms_id: int | None
    confirmed_at: datetime | None


class DecisionRead(BaseModel):
    """Whether marketing mail on ``topic`` may go to the contact now."""

    contact_id: int
    topic: str
    allowed: bool
    reason: str
    regime: str
