"""Pydantic shapes of contacts, tags, custom property definitions, lifecycle stages and the timeline."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from suppilo.errors import DomainError

PropertyType = Literal["string", "number", "boolean", "date", "enum", "multi_enum"]
ObjectType = Literal["contact", "company"]

MAX_PAGE_SIZE = 200


def encode_cursor(last_id: int) -> str:
    """An opaque cursor that continues a newest-first listing after ``last_id``."""
    return base64.urlsafe_b64encode(json.dumps({"before_id": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id a cursor continues after; a malformed cursor raises DomainError on ``cursor``."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)["before_id"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise DomainError("cursor", "the cursor is not one this API returned", code="invalid_cursor") from exc
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DomainError("cursor", "the cursor is not one this API returned", code="invalid_cursor")
    return value


def check_limit(limit: int) -> int:
    """A page size between 1 and MAX_PAGE_SIZE; DomainError on ``limit`` otherwise."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise DomainError("limit", f"limit must be between 1 and {MAX_PAGE_SIZE}", code="invalid_limit")
    return limit


class ContactCreate(BaseModel):
    """A new contact. Values are normalised by the service (email, phone, country, language, time zone)."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=320)
    external_id: str | None = Field(default=None, max_length=200)
    is_anonymous: bool = False
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, max_length=16)
    country: str | None = Field(default=None, max_length=8)
    region: str | None = Field(default=None, max_length=100)
    city: str | None = Field(default=None, max_length=100)
    timezone: str | None = Field(default=None, max_length=64)
    job_title: str | None = Field(default=None, max_length=200)
    owner_id: int | None = None
    company_id: int | None = None
    lifecycle_stage: str | None = Field(default=None, max_length=32)
    tags: list[str] = Field(default_factory=list)
    properties: dict[str, Any] = Field(default_factory=dict)


class ContactUpdate(BaseModel):
    """Changed fields of a contact; a field set to null is cleared, a field left out is kept.

    ``tags`` replaces the tag set; ``properties`` is merged (a property set to null is removed).
    ``version`` is the version the client read: a stale one is refused with 409.
    """

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=320)
    external_id: str | None = Field(default=None, max_length=200)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, max_length=16)
    country: str | None = Field(default=None, max_length=8)
    region: str | None = Field(default=None, max_length=100)
    city: str | None = Field(default=None, max_length=100)
    timezone: str | None = Field(default=None, max_length=64)
    job_title: str | None = Field(default=None, max_length=200)
    owner_id: int | None = None
    company_id: int | None = None
    tags: list[str] | None = None
    properties: dict[str, Any] | None = None
    version: int | None = None


class ContactRead(BaseModel):
    """A contact as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str | None
    external_id: str | None
    is_anonymous: bool
    first_name: str | None
    last_name: str | None
    phone: str | None
    language: str | None
    country: str | None
    region: str | None
    city: str | None
    timezone: str | None
    job_title: str | None
    owner_id: int | None
    company_id: int | None
    lifecycle_stage: str
    lifecycle_stage_at: datetime | None
    tags: list[str] = Field(default_factory=list)
    properties: dict[str, Any]
    first_touch_channel: str | None
    first_touch_source: str | None
    first_touch_campaign: str | None
    first_touch_at: datetime | None
    latest_touch_channel: str | None
    latest_touch_source: str | None
    latest_touch_campaign: str | None
    latest_touch_at: datetime | None
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class ContactPage(BaseModel):
    """One page of contacts, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[ContactRead]
    next_cursor: str | None


class ContactFilter(BaseModel):
    """Filters of the contact list (all optional, combined with AND)."""

    lifecycle_stage: str | None = None
    company_id: int | None = None
    owner_id: int | None = None
    tag: str | None = None
    country: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    q: str | None = None
    include_anonymous: bool = False


class TagsIn(BaseModel):
    """Tags to set, add or remove."""

    tags: list[str]


class MergeIn(BaseModel):
    """Merge ``other_id`` into the contact of the path."""

    other_id: int
    reason: str = Field(default="manual merge", max_length=200)


class PropertyDefinitionCreate(BaseModel):
    """A new custom property of contacts or companies."""

    model_config = ConfigDict(extra="forbid")

    object_type: ObjectType
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    label: str = Field(default="", max_length=200)
    type: PropertyType
    options: list[str] = Field(default_factory=list)
    description: str = Field(default="", max_length=500)


class PropertyDefinitionUpdate(BaseModel):
    """Changed fields of a property definition (the type only while no record uses the property)."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(default=None, max_length=200)
    type: PropertyType | None = None
    options: list[str] | None = None
    description: str | None = Field(default=None, max_length=500)


class PropertyDefinitionRead(BaseModel):
    """A property definition."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    object_type: str
    name: str
    label: str
    type: str
    options: list[str]
    description: str
    created_at: datetime
    updated_at: datetime


class LifecycleStageIn(BaseModel):
    """One stage of an edited stage set."""

    key: str = Field(min_length=1, max_length=32)
    label: str = Field(min_length=1, max_length=100)
    position: int
    kind: Literal["funnel", "side"] = "funnel"
    description: str = Field(default="", max_length=500)


class LifecycleStageRead(LifecycleStageIn):
    """A lifecycle stage with the number of contacts in it."""

    contacts: int = 0


class StageSetIn(BaseModel):
    """A replacement stage set; contacts in removed stages go to ``move_to`` (required when there are any)."""

    stages: list[LifecycleStageIn]
    move_to: str | None = None
    reason: str = Field(default="", max_length=400)


class StageMoveIn(BaseModel):
    """A manual move of a contact to another stage."""

    stage: str = Field(min_length=1, max_length=32)
    reason: str = Field(default="", max_length=500)


class StageChangeRead(BaseModel):
    """A recorded stage change."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    contact_id: int
    from_stage: str | None
    to_stage: str
    changed_at: datetime
    reason: str
    source: str
    actor: str | None


class TimelineItem(BaseModel):
    """One thing that happened to a contact."""

    type: Literal["event", "stage_change", "order", "form_submission", "touch"]
    at: datetime
    title: str
    data: dict[str, Any]


class TimelinePage(BaseModel):
    """Newest first; pass ``next_before`` as ``before`` for older items."""

    items: list[TimelineItem]
    next_before: datetime | None
