"""Outbox tables: one row per message (unique per cause), suppression entries, provider events, broadcasts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin
from suppilo.db.types import JSONType, UTCDateTime

# queued/deferred: waiting; sending: claimed and committed before talking to the server;
# sent | failed | uncertain | suppressed | skipped: final (uncertain = the fate is unknown after a crash).
OUTBOX_STATES = ("queued", "deferred", "sending", "sent", "failed", "uncertain", "suppressed", "skipped")
FINAL_STATES = ("sent", "failed", "uncertain", "suppressed", "skipped")
DUE_STATES = ("queued", "deferred")


class OutboxMessage(TenantMixin, Base):
    """One message to one contact, keyed by its cause (``dedupe_key``, unique per workspace)."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        UniqueConstraint("workspace_id", "dedupe_key"),
        # The sender drains every workspace in claim order (status, priority first, then due time): the claim query
        # walks this index and stops after a chunk, however long the queue.
        Index("ix_outbox_messages_claim", "status", "claim_rank", "next_attempt_at", "id"),
        Index("ix_outbox_messages_contact", "workspace_id", "contact_id", "created_at"),
        Index("ix_outbox_messages_ws_status", "workspace_id", "status", "id"),
        Index("ix_outbox_messages_broadcast", "workspace_id", "broadcast_id"),
        Index("uq_outbox_messages_message_id", "message_id", unique=True),
    )

    dedupe_key: Mapped[str] = mapped_column(String(200), nullable=False)
    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="SET NULL"))
    broadcast_id: Mapped[int | None] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="marketing")
    topic: Mapped[str] = mapped_column(String(64), nullable=False, default="marketing")
    template_key: Mapped[str | None] = mapped_column(String(100))
    extra: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # -priority: the claim index is ascending on every column (expression indexes are not migrated by Alembic).
    claim_rank: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    to_address: Mapped[str | None] = mapped_column(String(320))
    message_id: Mapped[str | None] = mapped_column(String(320))
    links: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    sending_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Delivery outcome reported later (DSN, provider webhook): delivered < bounced | complained.
    delivery_status: Mapped[str | None] = mapped_column(String(16))
    delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    human_opens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    machine_opens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    human_clicks: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    machine_clicks: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class OutboxBody(Base):
    """The pre-rendered content of an outbox message queued with ``rendered=`` (one row per such message).

    Kept out of ``outbox_messages`` so that the sender's two status updates per message rewrite a short row: with
    the body inline (~3 KB) every update rewrote the body too, and a 100,000-row queue outgrew the page cache."""

    __tablename__ = "outbox_bodies"

    outbox_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("outbox_messages.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    workspace_id: Mapped[int] = mapped_column(BigId, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)
    subject: Mapped[str] = mapped_column(Text, nullable=False)
    preheader: Mapped[str] = mapped_column(Text, nullable=False, default="")
    html: Mapped[str] = mapped_column(Text, nullable=False, default="")
    text: Mapped[str] = mapped_column(Text, nullable=False, default="")


class SuppressionEntry(TenantMixin, Base):
    """An address that must not be mailed, by SHA-256 of its normalised form (survives the contact's erasure)."""

    __tablename__ = "suppression_entries"
    __table_args__ = (UniqueConstraint("workspace_id", "address_hash", "reason"),)

    address_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)
    source: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class MailEvent(TenantMixin, Base):
    """A delivery event from a DSN or a provider webhook, stored once per event id (replays change nothing)."""

    __tablename__ = "mail_events"
    __table_args__ = (
        UniqueConstraint("workspace_id", "event_key"),
        Index("ix_mail_events_outbox", "workspace_id", "outbox_id"),
    )

    event_key: Mapped[str] = mapped_column(String(200), nullable=False)
    outbox_id: Mapped[int | None] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)


class Broadcast(TenantMixin, Base):
    """A one-off send of a template to a list of contacts, a tag or a segment, at a moment or a local time of day."""

    __tablename__ = "broadcasts"
    __table_args__ = (Index("ix_broadcasts_ws_status", "workspace_id", "status", "id"),)

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    template_key: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="marketing")
    topic: Mapped[str] = mapped_column(String(64), nullable=False, default="marketing")
    contact_ids: Mapped[list[int] | None] = mapped_column(JSONType)
    tag: Mapped[str | None] = mapped_column(String(100))
    # A segment or static list: its members when the broadcast is queued (not when it was scheduled).
    segment_id: Mapped[int | None] = mapped_column(BigId)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    local_date: Mapped[str | None] = mapped_column(String(10))
    local_time: Mapped[str | None] = mapped_column(String(5))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="scheduled")
    enqueued: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cursor: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
