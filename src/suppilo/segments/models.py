"""Segments (dynamic or static lists), their stored membership and the history of who entered and left."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Index, Integer, String, func, select
from sqlalchemy.orm import Mapped, column_property, mapped_column

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
    # The count as of the last fold of ``segment_count_deltas`` (column ``member_count``); read ``member_count``.
    folded_count: Mapped[int] = mapped_column("member_count", Integer, nullable=False, default=0)
    last_evaluated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    if TYPE_CHECKING:  # mapped below, once SegmentCountDelta exists
        member_count: Mapped[int]


class SegmentMembership(Base):
    """A contact that is in a segment now, since ``entered_at``."""

    __tablename__ = "segment_memberships"
    __table_args__ = (Index("ix_segment_memberships_ws_contact", "workspace_id", "contact_id"),)

    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    # No foreign key to workspaces: the row lives no longer than its segment (cascade above), and the segment no
    # longer than its workspace (segments.workspace_id cascades). A key here would only add a check per written row.
    workspace_id: Mapped[int] = mapped_column(BigId, nullable=False)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class SegmentMembershipChange(TenantMixin, Base):
    """A contact ``entered`` or ``exited`` a segment at ``at``; ``reason`` says what caused it."""

    __tablename__ = "segment_membership_changes"
    __table_args__ = (
        Index("ix_segment_changes_ws_segment_at", "workspace_id", "segment_id", "at"),
        Index("ix_segment_changes_ws_contact_at", "workspace_id", "contact_id", "at"),
    )

    # Like a membership's: deleted with its segment (cascade), hence with its workspace; no key to workspaces.
    workspace_id: Mapped[int] = mapped_column(BigId, nullable=False)
    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="CASCADE"), nullable=False)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    change: Mapped[str] = mapped_column(String(8), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    reason: Mapped[str] = mapped_column(String(64), nullable=False, default="")


class SegmentCountDelta(Base):
    """A change of a segment's member count not yet folded into ``segments.member_count``.

    Membership writes append one row per segment whose count moved instead of updating the segment's row (which
    rewrote the same segment rows on every event); ``fold_counts`` adds them up into the segment and deletes them.
    A segment's count is ``segments.member_count`` plus its rows here (``Segment.member_count``), exact at all times.
    """

    __tablename__ = "segment_count_deltas"
    __table_args__ = (Index("ix_segment_count_deltas_segment", "segment_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    segment_id: Mapped[int] = mapped_column(BigId, ForeignKey("segments.id", ondelete="CASCADE"), nullable=False)
    delta: Mapped[int] = mapped_column(Integer, nullable=False)


# A segment's exact member count: the folded count plus the deltas not folded yet (loaded with the segment).
Segment.member_count = column_property(
    Segment.folded_count
    + func.coalesce(
        select(func.sum(SegmentCountDelta.delta))
        .where(SegmentCountDelta.segment_id == Segment.id)
        .correlate_except(SegmentCountDelta)
        .scalar_subquery(),
        0,
    )
)
