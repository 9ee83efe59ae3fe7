"""Offers (what a coupon is worth), coupons (single-use codes) and their redemptions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin, utcnow
from suppilo.db.types import JSONType, UTCDateTime

OFFER_KINDS: tuple[str, ...] = ("percent", "fixed", "free_product")
COUPON_STATUSES: tuple[str, ...] = ("issued", "redeemed", "void")


class Offer(TenantMixin, TimestampMixin, Base):
    """An offer definition: a percentage, a fixed amount or a free product, with its conditions.

    ``percent`` / ``amount_minor`` + ``currency`` / ``product_sku`` hold the base value; ``value_rule`` may set the
    value per contact when a coupon is issued (by lifetime value or CLV tier).
    """

    __tablename__ = "offers"
    __table_args__ = (UniqueConstraint("workspace_id", "key"),)

    key: Mapped[str] = mapped_column(String(100), nullable=False)
    name: Mapped[str] = mapped_column(String(300), nullable=False)
    description: Mapped[str] = mapped_column(String(2000), nullable=False, default="")
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    percent: Mapped[int | None] = mapped_column(Integer)
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    product_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("products.id", ondelete="SET NULL"))
    product_sku: Mapped[str | None] = mapped_column(String(100))
    min_order_minor: Mapped[int | None] = mapped_column(BigInteger)
    min_order_currency: Mapped[str | None] = mapped_column(String(3))
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    valid_days: Mapped[int | None] = mapped_column(Integer)
    per_customer_limit: Mapped[int | None] = mapped_column(Integer)
    value_rule: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class Coupon(TenantMixin, Base):
    """A single-use code of an offer, for one contact or for anyone (bulk codes), with its value fixed at issue."""

    __tablename__ = "coupons"
    __table_args__ = (
        UniqueConstraint("workspace_id", "code"),
        UniqueConstraint("workspace_id", "idempotency_key"),
        Index("ix_coupons_ws_offer", "workspace_id", "offer_id", "id"),
        Index("ix_coupons_ws_contact", "workspace_id", "contact_id"),
    )

    offer_id: Mapped[int] = mapped_column(BigId, ForeignKey("offers.id", ondelete="CASCADE"), nullable=False)
    code: Mapped[str] = mapped_column(String(32), nullable=False)
    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="issued")
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    percent: Mapped[int | None] = mapped_column(Integer)
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    product_sku: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    batch: Mapped[str | None] = mapped_column(String(100))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Redemption(TenantMixin, Base):
    """The one redemption of a coupon (the unique coupon id is a second guard against double redemption)."""

    __tablename__ = "coupon_redemptions"
    __table_args__ = (
        UniqueConstraint("coupon_id"),
        Index("ix_coupon_redemptions_ws_offer_contact", "workspace_id", "offer_id", "contact_id"),
        Index("ix_coupon_redemptions_ws_order", "workspace_id", "order_id"),
    )

    coupon_id: Mapped[int] = mapped_column(BigId, ForeignKey("coupons.id", ondelete="CASCADE"), nullable=False)
    offer_id: Mapped[int] = mapped_column(BigId, ForeignKey("offers.id", ondelete="CASCADE"), nullable=False)
    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="SET NULL"))
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id", ondelete="SET NULL"))
    order_total_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    discount_minor: Mapped[int | None] = mapped_column(BigInteger)
    redeemed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
