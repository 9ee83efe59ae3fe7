"""Inputs and outputs of the analytics API."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SpendGroup = Literal["channel", "campaign", "month", "country", "region"]
FunnelGroup = Literal["channel", "country", "region"]
AttributionLevel = Literal["channel", "campaign"]


def _ccy(v: str) -> str:
    v = v.strip().upper()
    if len(v) != 3 or not v.isalpha():
        raise ValueError("must be a three-letter ISO 4217 code")
    return v


class RateCreate(BaseModel):
    """One unit of ``base`` is ``rate`` units of ``quote`` from ``date`` on."""

    model_config = ConfigDict(extra="forbid")

    date: date
    base: str
    quote: str
    rate: Decimal = Field(gt=0)

    _v_base = field_validator("base", "quote")(_ccy)


class RateRead(RateCreate):
    model_config = ConfigDict(from_attributes=True, extra="ignore")


class SpendCreate(BaseModel):
    """Money spent on a channel (and campaign) on one day."""

    model_config = ConfigDict(extra="forbid")

    date: date
    channel: str = Field(min_length=1, max_length=32)
    campaign: str | None = Field(default=None, max_length=200)
    amount_minor: int = Field(ge=0)
    currency: str
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2 market of the spend")
    region: str | None = Field(default=None, max_length=100)

    _v_ccy = field_validator("currency")(_ccy)

    @field_validator("country")
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip().upper()
        if len(v) != 2 or not v.isalpha():
            raise ValueError("must be a two-letter ISO 3166 country code")
        return v


class SpendRead(SpendCreate):
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    id: int


class ImportResult(BaseModel):
    imported: int
    errors: list[dict[str, Any]] = Field(default_factory=list)


class EventFunnelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[str] = Field(min_length=2, max_length=20)
    window_days: float = Field(default=30, gt=0, le=3650)
    date_from: date | None = Field(default=None, alias="from")
    date_to: date | None = Field(default=None, alias="to")
    # auto: the columnar copy (DuckDB) once the event log is large, else SQL on the operational database.
    engine: Literal["auto", "sql", "columnar"] = "auto"


class Counts(BaseModel):
    conversions: int = Field(ge=0)
    trials: int = Field(ge=0)


class ArmIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    conversions: int = Field(ge=0)
    trials: int = Field(ge=0)
    # Cumulative counts at earlier looks, oldest first (the same number for every arm); the sequential test uses them.
    history: list[Counts] = Field(default_factory=list, max_length=1000)


class ExperimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arms: list[ArmIn] = Field(min_length=2, max_length=20)
    control: str
    alpha: float = Field(default=0.05, gt=0, lt=1)
    tau: float = Field(default=0.05, gt=0)


class ClvFitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    holdout_days: int = Field(default=90, ge=7, le=730)
    as_of: date | None = None
