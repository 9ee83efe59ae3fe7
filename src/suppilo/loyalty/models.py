"""The loyalty programme of a workspace, its append-only points ledger and the cached balance per contact."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin, utcnow
from suppilo.db.types import JSONType, UTCDateTime

ENTRY_KINDS: tuple[str, ...] = ("earn", "bonus", "redeem", "expire", "reverse", "adjust")


class LoyaltyProgram(TenantMixin, TimestampMixin, Base):
    """The workspace's programme: earning rate, expiry, tiers, bonus events and rewards (one row per workspace)."""

    __tablename__ = "loyalty_programs"
    __table_args__ = (UniqueConstraint("workspace_id"),)

    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    points_per_unit: Mapped[Decimal] = mapped_column(Numeric(12, 4), nullable=False, default=Decimal(1))
    expiry_days: Mapped[int | None] = mapped_column(Integer)
    tier_basis: Mapped[str] = mapped_column(String(16), nullable=False, default="points")
    tier_window_days: Mapped[int] = mapped_column(Integer, nullable=False, default=365)
    tiers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False, default=list)
    bonus_events: Mapped[dict[str, int]] = mapped_column(JSONType, nullable=False, default=dict)
    rewards: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False, default=list)


class LoyaltyEntry(TenantMixin, Base):
    """One movement of a contact's points; never updated or deleted (a correction is a new entry).

    ``points`` is signed. Positive entries may carry ``expires_at``; an ``expire`` entry names the entry it expires in
    ``lot_id``. ``idempotency_key`` makes a retried award, redemption or order earning count once.
    """

    __tablename__ = "loyalty_ledger"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key"),
        Index("ix_loyalty_ledger_ws_contact", "workspace_id", "contact_id", "id"),
        Index("ix_loyalty_ledger_ws_order", "workspace_id", "order_id"),
        Index("ix_loyalty_ledger_ws_expires", "workspace_id", "expires_at"),
    )

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    points: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id", ondelete="SET NULL"))
    coupon_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("coupons.id", ondelete="SET NULL"))
    lot_id: Mapped[int | None] = mapped_column(BigId)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class LoyaltyBalance(TenantMixin, Base):
    """The sum of a contact's ledger, kept in the same transaction as every entry, and the contact's tier."""

    __tablename__ = "loyalty_balances"
    __table_args__ = (UniqueConstraint("workspace_id", "contact_id"),)

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    points: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    tier: Mapped[str | None] = mapped_column(String(50))
    tier_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
