"""Pydantic shapes of companies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CompanyCreate(BaseModel):
    """A new company; the name is derived from the domain when left out."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    domain: str | None = Field(default=None, max_length=300)
    industry: str | None = Field(default=None, max_length=100)
    employees: int | None = Field(default=None, ge=0)
    annual_revenue_minor: int | None = Field(default=None, ge=0)
    revenue_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    country: str | None = Field(default=None, max_length=8)
    city: str | None = Field(default=None, max_length=100)
    owner_id: int | None = None
    external_id: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class CompanyUpdate(BaseModel):
    """Changed fields of a company (null clears; ``properties`` is merged, a null value removes one)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    domain: str | None = Field(default=None, max_length=300)
    industry: str | None = Field(default=None, max_length=100)
    employees: int | None = Field(default=None, ge=0)
    annual_revenue_minor: int | None = Field(default=None, ge=0)
    revenue_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    country: str | None = Field(default=None, max_length=8)
    city: str | None = Field(default=None, max_length=100)
    owner_id: int | None = None
    external_id: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] | None = None


class CompanyRead(BaseModel):
    """A company as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    domain: str | None
    industry: str | None
    employees: int | None
    annual_revenue_minor: int | None
    revenue_currency: str | None
    country: str | None
    city: str | None
    owner_id: int | None
    external_id: str | None
    properties: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class CompanyPage(BaseModel):
    """One page of companies, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[CompanyRead]
    next_cursor: str | None
