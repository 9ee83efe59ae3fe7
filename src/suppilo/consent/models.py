"""The consent ledger table: append-only; the current state is derived from it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin
from suppilo.db.types import UTCDateTime


class ConsentRecord(TenantMixin, Base):
    """One statement about a contact's consent: granted, withdrawn or objection (GDPR Art. 21), with its proof."""

    __tablename__ = "consent_records"
    __table_args__ = (Index("ix_consent_records_contact", "workspace_id", "contact_id", "topic", "recorded_at"),)

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    channel: Mapped[str] = mapped_column(String(16), nullable=False, default="email")
    topic: Mapped[str] = mapped_column(String(64), nullable=False, default="marketing")
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    legal_basis: Mapped[str] = mapped_column(String(32), nullable=False, default="consent")
    source: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    source_url: Mapped[str | None] = mapped_column(Text)
    consent_text: Mapped[str | None] = mapped_column(Text)
    consent_version: Mapped[str | None] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # When the fact behind implied consent happened (purchase, inquiry): CASL expiry counts from it.
    evidence_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A double-opt-in confirmation is a new record pointing at the sign-up it confirms.
    confirms_id: Mapped[int | None] = mapped_column(BigId)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
