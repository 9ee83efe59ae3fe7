"""Segments (dynamic or static lists), their stored membership and the history of who entered and left."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType, UTCDateTime


class Segment(TenantMixin, TimestampMixin, Base):
    """A named segment: ``dynamic`` (membership follows ``filter``) or ``static`` (members added by hand)."""

    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_ws_name", "workspace_id", "name"),)

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(String(2000), nullable=False, default="")
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="dynamic")
    filter: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    dependencies: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    member_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SegmentMembership(Base):
    """A contact that is in a segment now, since ``entered_at``."""

    __tablename__ = "segment_memberships"
    __table_args__ = (Index("ix_segment_memberships_ws_contact", "workspace_id", "contact_id"),)

    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(BigId, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class SegmentMembershipChange(TenantMixin, Base):
    """A contact ``entered`` or ``exited`` a segment at ``at``; ``reason`` says what caused it."""

    __tablename__ = "segment_membership_changes"
    __table_args__ = (
        Index("ix_segment_changes_ws_segment_at", "workspace_id", "segment_id", "at"),
        Index("ix_segment_changes_ws_contact_at", "workspace_id", "contact_id", "at"),
    )

    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="CASCADE"), nullable=False)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    change: Mapped[str] = mapped_column(String(8), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    reason: Mapped[str] = mapped_column(String(64), nullable=False, default="")
