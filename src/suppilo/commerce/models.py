"""Products, orders, order lines, refunds and carts; money is integer minor units plus ISO 4217."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType, UTCDateTime


class Product(TenantMixin, TimestampMixin, Base):
    """A product of the catalogue."""

    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("workspace_id", "sku"),
        Index("ix_products_ws_category", "workspace_id", "category"),
    )

    sku: Mapped[str] = mapped_column(String(100), nullable=False)
    name: Mapped[str] = mapped_column(String(300), nullable=False)
    category: Mapped[str | None] = mapped_column(String(200))
    price_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    url: Mapped[str | None] = mapped_column(String(2000))
    image_url: Mapped[str | None] = mapped_column(String(2000))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)


class Order(TenantMixin, TimestampMixin, Base):
    """A completed order of a contact; ``external_id`` is the shop's order id (the upsert key)."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("workspace_id", "external_id"),
        Index("ix_orders_contact_time", "workspace_id", "contact_id", "placed_at"),
        Index("ix_orders_ws_time", "workspace_id", "placed_at"),
    )

    external_id: Mapped[str] = mapped_column(String(200), nullable=False)
    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="completed")
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    subtotal_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    discount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    tax_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    shipping_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    total_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    coupon_code: Mapped[str | None] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(32))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)


class OrderLine(Base):
    """One line of an order."""

    __tablename__ = "order_lines"
    __table_args__ = (Index("ix_order_lines_order", "order_id"), Index("ix_order_lines_ws_sku", "workspace_id", "sku"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[int] = mapped_column(BigId, ForeignKey("workspaces.id", ondelete="CASCADE"))
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id", ondelete="CASCADE"))
    product_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("products.id", ondelete="SET NULL"))
    sku: Mapped[str] = mapped_column(String(100), nullable=False)
    name: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    category: Mapped[str | None] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Refund(TenantMixin, Base):
    """A (partial) refund of an order; idempotent on ``external_id``."""

    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("workspace_id", "external_id"), Index("ix_refunds_order", "order_id"))

    external_id: Mapped[str] = mapped_column(String(200), nullable=False)
    order_id: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id", ondelete="CASCADE"))
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    refunded_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")


class Cart(TenantMixin, TimestampMixin, Base):
    """A shopping cart: open while products are added, ``converted`` by an order, ``abandoned`` when idle."""

    __tablename__ = "carts"
    __table_args__ = (
        UniqueConstraint("workspace_id", "external_id"),
        Index("ix_carts_ws_status_activity", "workspace_id", "status", "last_activity_at"),
        Index("ix_carts_contact", "workspace_id", "contact_id"),
    )

    external_id: Mapped[str] = mapped_column(String(200), nullable=False)
    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    value_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False, default=list)
    order_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("orders.id", ondelete="SET NULL"))
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    # The message ids of the latest tracked events applied to the cart, so a replayed event changes nothing.
    applied_message_ids: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
