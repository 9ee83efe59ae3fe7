"""API shapes of journeys, versions, enrollments and their timelines."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class JourneyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: str
    current_version: int
    trigger_type: str
    playbook: str | None
    next_run_at: datetime | None
    activated_at: datetime | None
    created_at: datetime
    updated_at: datetime


class JourneyDetail(JourneyRead):
    definition: dict[str, Any]


class JourneyPage(BaseModel):
    items: list[JourneyRead]


class VersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    definition: dict[str, Any]
    created_at: datetime
    created_by: str


class StatusIn(BaseModel):
    status: Literal["active", "paused", "archived"]


class EnrolIn(BaseModel):
    """Contacts to enrol (``contact_ids``) or a segment's members (``segment_id``); ``key`` makes a retry harmless."""

    contact_ids: list[int] | None = Field(default=None, min_length=1, max_length=10_000)
    segment_id: int | None = None
    key: str = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one(self) -> EnrolIn:
        if (self.contact_ids is None) == (self.segment_id is None):
            raise ValueError("give contact_ids or segment_id")
        return self


class EnrolOut(BaseModel):
    entered: int


class MigrateIn(BaseModel):
    from_version: int = Field(ge=1)
    to_version: int | None = Field(default=None, ge=1)
    step_map: dict[str, str] = Field(default_factory=dict)


class MigrateOut(BaseModel):
    moved: int


class EnrollmentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    journey_id: int
    version: int
    contact_id: int
    status: str
    group: str
    step: str
    step_since: datetime
    due_at: datetime | None
    wait_event: str | None
    variants: dict[str, str]
    entered_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    converted_at: datetime | None
    last_error: str | None


class EnrollmentPage(BaseModel):
    items: list[EnrollmentRead]
    next_cursor: str | None


class TimelineEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step_id: str
    outcome: str
    at: datetime
    outbox_id: int | None
    detail: dict[str, Any]


class EnrollmentDetail(EnrollmentRead):
    timeline: list[TimelineEntry]


class PlaybookRead(BaseModel):
    key: str
    name: str
    description: str
    needs: list[str]
    definition: dict[str, Any]


class PlaybookEnable(BaseModel):
    """Settings that fill a playbook's blanks (e.g. the offer key of a win-back coupon, a segment)."""

    activate: bool = True
    settings: dict[str, Any] = Field(default_factory=dict)
