"""Computed recommendations of a workspace: product pairs, best-sellers and the last computation.

Everything here is derived from orders by ``service.recompute`` and replaced as a whole in one transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin
from suppilo.db.types import UTCDateTime

RULE_KINDS: tuple[str, ...] = ("together", "similar")


class RecommendationRule(TenantMixin, Base):
    """``product_id → recommended_product_id``: ``together`` (association rule over orders: support, confidence,
    lift; score = confidence) or ``similar`` (customers who bought one bought the other: score = cosine
    similarity). ``rank`` is the 0-based position among the product's rules of that kind."""

    __tablename__ = "recommendation_rules"
    __table_args__ = (Index("ix_recommendation_rules_lookup", "workspace_id", "kind", "product_id", "rank"),)

    product_id: Mapped[int] = mapped_column(BigId, ForeignKey("products.id", ondelete="CASCADE"), nullable=False)
    recommended_product_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("products.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    rank: Mapped[int] = mapped_column(Integer, nullable=False)
    pair_count: Mapped[int] = mapped_column(Integer, nullable=False)
    support: Mapped[float] = mapped_column(Float, nullable=False)
    confidence: Mapped[float] = mapped_column(Float, nullable=False)
    lift: Mapped[float] = mapped_column(Float, nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class BestSeller(TenantMixin, Base):
    """A product's sales: distinct orders in the recent window and overall; ``rank`` orders the workspace's list."""

    __tablename__ = "recommendation_best_sellers"
    __table_args__ = (
        UniqueConstraint("workspace_id", "product_id"),
        Index("ix_recommendation_best_sellers_rank", "workspace_id", "rank"),
        Index("ix_recommendation_best_sellers_category", "workspace_id", "category", "rank"),
    )

    product_id: Mapped[int] = mapped_column(BigId, ForeignKey("products.id", ondelete="CASCADE"), nullable=False)
    category: Mapped[str | None] = mapped_column(String(200))
    rank: Mapped[int] = mapped_column(Integer, nullable=False)
    recent_orders: Mapped[int] = mapped_column(Integer, nullable=False)
    total_orders: Mapped[int] = mapped_column(Integer, nullable=False)
    units: Mapped[int] = mapped_column(BigInteger, nullable=False)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class RecommendationRun(TenantMixin, Base):
    """The workspace's last computation and the order fingerprint it saw (to skip unchanged workspaces)."""

    __tablename__ = "recommendation_runs"
    __table_args__ = (UniqueConstraint("workspace_id"),)

    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    order_count: Mapped[int] = mapped_column(Integer, nullable=False)
    orders_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lines: Mapped[int] = mapped_column(BigInteger, nullable=False)
    baskets: Mapped[int] = mapped_column(Integer, nullable=False)
    customers: Mapped[int] = mapped_column(Integer, nullable=False)
    together_rules: Mapped[int] = mapped_column(Integer, nullable=False)
    similar_pairs: Mapped[int] = mapped_column(Integer, nullable=False)
    best_sellers: Mapped[int] = mapped_column(Integer, nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
