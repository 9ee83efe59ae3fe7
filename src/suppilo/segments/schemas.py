"""Segment shapes for the API and CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SegmentKind = Literal["dynamic", "static"]


class SegmentCreate(BaseModel):
    """A new segment: a dynamic one needs ``filter``; a static list has none."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    kind: SegmentKind = "dynamic"
    filter: dict[str, Any] | None = None


class SegmentUpdate(BaseModel):
    """Fields to change (omitted ones stay)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    filter: dict[str, Any] | None = None


class SegmentRead(BaseModel):
    """A segment as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    kind: SegmentKind
    filter: dict[str, Any] | None
    dependencies: list[str]
    member_count: int
    last_evaluated_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SegmentPage(BaseModel):
    """Segments in id order."""

    items: list[SegmentRead]


class PreviewIn(BaseModel):
    """A filter being edited."""

    filter: dict[str, Any]


class PreviewOut(BaseModel):
    """How many contacts match it now."""

    count: int


class RefreshOut(BaseModel):
    """The result of evaluating a segment."""

    segment_id: int
    entered: int
    exited: int
    member_count: int


class MemberRead(BaseModel):
    """A member of a segment."""

    contact_id: int
    entered_at: datetime


class MemberPage(BaseModel):
    """Members by contact id; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[MemberRead]
    next_cursor: str | None


class ChangeRead(BaseModel):
    """A contact entered or exited a segment."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    segment_id: int
    contact_id: int
    change: Literal["entered", "exited"]
    at: datetime
    reason: str


class ChangePage(BaseModel):
    """Changes newest first; pass ``next_cursor`` as ``cursor`` for older ones."""

    items: list[ChangeRead]
    next_cursor: str | None


class MembersIn(BaseModel):
    """Contacts to add to or remove from a static list."""

    model_config = ConfigDict(extra="forbid")

    contact_ids: list[int] = Field(min_length=1, max_length=10_000)


class MembersOut(BaseModel):
    """How many contacts were actually added or removed."""

    changed: int
    member_count: int


class ContactSegmentRead(BaseModel):
    """A segment a contact is in."""

    segment_id: int
    name: str
    kind: SegmentKind
    entered_at: datetime
