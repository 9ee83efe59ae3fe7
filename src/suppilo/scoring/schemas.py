"""Scoring shapes for the API and CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ScoreKind = Literal["fit", "engagement", "predictive"]


class IcpCreate(BaseModel):
    """A new ideal customer profile; ``definition`` is validated field by field (see docs/scoring.md)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    definition: dict[str, Any]
    active: bool = True


class IcpUpdate(BaseModel):
    """Fields to change (omitted ones stay)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    definition: dict[str, Any] | None = None
    active: bool | None = None


class IcpRead(BaseModel):
    """An ICP as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    definition: dict[str, Any]
    active: bool
    created_at: datetime
    updated_at: datetime


class IcpPage(BaseModel):
    """ICPs in id order."""

    items: list[IcpRead]


class EngagementSettings(BaseModel):
    """Engagement rules, half-life and stage thresholds (validated by ``engine.scoring.parse_engagement``)."""

    model_config = ConfigDict(extra="allow")


class RecomputeIn(BaseModel):
    """Contacts to rescore now (none: every contact of the workspace)."""

    model_config = ConfigDict(extra="forbid")

    contact_ids: list[int] | None = Field(default=None, max_length=10_000)
    kinds: list[Literal["fit", "engagement"]] = Field(default=["fit", "engagement"], min_length=1)


class RecomputeOut(BaseModel):
    """How many contacts were scored and how many scores changed, per kind."""

    scored: dict[str, int]
    changed: dict[str, int]


class CriterionOut(BaseModel):
    """One line of a fit explanation."""

    criterion: str
    matched: bool
    points: float
    max_points: float
    detail: str


class ContributionOut(BaseModel):
    """What one engagement rule adds to the score."""

    rule: str
    events: int
    points: float
    points_now: float


class ScoreOut(BaseModel):
    """One score of a contact: ``score`` is its value now (engagement decayed to now)."""

    kind: ScoreKind
    score: float
    grade: str | None
    stored_score: float
    as_of: datetime
    computed_at: datetime
    icp_id: int | None = None
    icp_name: str | None = None
    half_life_days: float | None = None
    criteria: list[CriterionOut] = Field(default_factory=list)
    contributions: list[ContributionOut] = Field(default_factory=list)
    reasons: list[dict[str, Any]] = Field(default_factory=list)


class ContactScoresOut(BaseModel):
    """A contact's scores with their explanations and the sales priority of fit × engagement."""

    contact_id: int
    scores: dict[str, ScoreOut]
    priority: str | None


class ScoreChangeOut(BaseModel):
    """One entry of a contact's score history."""

    model_config = ConfigDict(from_attributes=True)

    kind: str
    score: float
    previous: float | None
    grade: str | None
    at: datetime
    reason: str


class MatrixOut(BaseModel):
    """Contacts counted by fit grade (rows) × engagement band (columns); ``none``: no score."""

    engagement_bands: list[str]
    rows: dict[str, dict[str, int]]


class PredictiveTrainIn(BaseModel):
    """Train a model of reaching ``target_stage`` within ``days``."""

    model_config = ConfigDict(extra="forbid")

    target_stage: str = Field(default="customer", min_length=1, max_length=32)
    days: int = Field(default=90, ge=7, le=365)
