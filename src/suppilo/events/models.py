"""Event log, touches and the editable channel rule table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin
from suppilo.db.types import JSONType, UTCDateTime


class Event(TenantMixin, Base):
    """One tracked event: page, track, identify, group, alias, screen (Segment spec) or a system event."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "message_id"),
        # (PostgreSQL: the name rides along, so counting a contact's events of a name in a window — a segment
        # condition — is an index-only scan)
        Index("ix_events_contact_time", "workspace_id", "contact_id", "occurred_at", postgresql_include=["name"]),
        Index("ix_events_name_time", "workspace_id", "name", "occurred_at"),
    )

    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    anonymous_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    message_id: Mapped[str] = mapped_column(String(200), nullable=False)


class Touch(TenantMixin, Base):
    """A marketing touch: where a contact came from at one moment (UTM, referrer, import, form ...)."""

    __tablename__ = "touches"
    __table_args__ = (Index("ix_touches_contact_time", "workspace_id", "contact_id", "occurred_at"),)

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(BigId)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    source: Mapped[str | None] = mapped_column(String(200))
    medium: Mapped[str | None] = mapped_column(String(200))
    campaign: Mapped[str | None] = mapped_column(String(200))
    term: Mapped[str | None] = mapped_column(String(200))
    content: Mapped[str | None] = mapped_column(String(200))
    referrer: Mapped[str | None] = mapped_column(Text)
    landing_url: Mapped[str | None] = mapped_column(Text)


class ChannelRule(TenantMixin, Base):
    """One row of a workspace's channel classification table, tried in ``position`` order."""

    __tablename__ = "channel_rules"
    __table_args__ = (Index("ix_channel_rules_ws_pos", "workspace_id", "position"),)

    position: Mapped[int] = mapped_column(Integer, nullable=False)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    conditions: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    description: Mapped[str] = mapped_column(String(300), nullable=False, default="")
