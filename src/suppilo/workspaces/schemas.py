"""Pydantic shapes of workspaces and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scope = Literal["track", "read", "write", "admin"]
SCOPES: tuple[str, ...] = ("track", "read", "write", "admin")


class WorkspaceCreate(BaseModel):
    """What is needed to create a workspace."""

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    name: str = Field(min_length=1, max_length=200)
    default_language: str = Field(default="en", pattern=r"^[a-z]{2,3}$")
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    timezone: str = "UTC"
    country: str = Field(default="FI", pattern=r"^[A-Z]{2}$")
    address_line1: str | None = None
    address_line2: str | None = None
    postal_code: str | None = None
    city: str | None = None
    region: str | None = None
    address_country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    require_tracking_consent: bool = True
    site_domains: list[str] = Field(default_factory=list)


class WorkspaceUpdate(BaseModel):
    """Fields of a workspace that can be changed."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    default_language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    timezone: str | None = None
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    address_line1: str | None = None
    address_line2: str | None = None
    postal_code: str | None = None
    city: str | None = None
    region: str | None = None
    address_country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    require_tracking_consent: bool | None = None
    site_domains: list[str] | None = None
    # Sending policies, kept in ``settings`` (validated by messaging.policies; null removes one).
    frequency_cap: dict[str, Any] | None = None
    quiet_hours: dict[str, Any] | None = None


class WorkspaceRead(BaseModel):
    """A workspace as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    slug: str
    name: str
    default_language: str
    currency: str
    timezone: str
    country: str
    address_line1: str | None
    address_line2: str | None
    postal_code: str | None
    city: str | None
    region: str | None
    address_country: str | None
    require_tracking_consent: bool
    site_domains: list[str]
    frequency_cap: dict[str, Any] | None = None
    quiet_hours: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _policies_from_settings(cls, data: Any) -> Any:
        settings = getattr(data, "settings", None)
        if isinstance(data, dict) or not isinstance(settings, dict):
            return data
        values = {name: getattr(data, name) for name in cls.model_fields if hasattr(data, name)}
        values.update(frequency_cap=settings.get("frequency_cap"), quiet_hours=settings.get("quiet_hours"))
        return values


class ApiKeyRead(BaseModel):
    """An API key without its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
