"""Analytics tables: date-effective exchange rates, marketing spend and the stored CLV fits."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Date, Float, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, TenantMixin, utcnow
from suppilo.db.types import JSONType, UTCDateTime


class ExchangeRate(TenantMixin, Base):
    """From ``rate_date`` on (until a later row), one unit of ``base`` is worth ``rate`` units of ``quote``."""

    __tablename__ = "exchange_rates"
    __table_args__ = (UniqueConstraint("workspace_id", "base", "quote", "rate_date"),)

    rate_date: Mapped[date] = mapped_column(Date, nullable=False)
    base: Mapped[str] = mapped_column(String(3), nullable=False)
    quote: Mapped[str] = mapped_column(String(3), nullable=False)
    rate: Mapped[Decimal] = mapped_column(Numeric(24, 12), nullable=False)


class MarketingSpend(TenantMixin, Base):
    """Money spent on one channel (and optionally campaign) on one day, in its own currency."""

    __tablename__ = "marketing_spend"
    __table_args__ = (
        Index("ix_marketing_spend_ws_date", "workspace_id", "spend_date"),
        Index("ix_marketing_spend_ws_channel", "workspace_id", "channel", "spend_date"),
    )

    spend_date: Mapped[date] = mapped_column(Date, nullable=False)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    campaign: Mapped[str | None] = mapped_column(String(200))
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    country: Mapped[str | None] = mapped_column(String(2))  # the market the money was spent on (ISO 3166-1)
    region: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class ClvFit(TenantMixin, Base):
    """One CLV fit of a workspace: parameters, diagnostics and the holdout check (the latest is the current one)."""

    __tablename__ = "clv_fits"
    __table_args__ = (Index("ix_clv_fits_ws_time", "workspace_id", "fitted_at"),)

    fitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    customers: Mapped[int] = mapped_column(Integer, nullable=False)
    method: Mapped[str] = mapped_column(String(32), nullable=False)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)


class DashboardSnapshot(TenantMixin, Base):
    """The web dashboard's figures for one period length, computed from scratch by ``analytics.dashboard`` (a worker
    job keeps them current); ``watermark`` names the source rows they were computed from."""

    __tablename__ = "dashboard_snapshots"
    __table_args__ = (UniqueConstraint("workspace_id", "days"),)

    days: Mapped[int] = mapped_column(Integer, nullable=False)
    as_of: Mapped[date] = mapped_column(Date, nullable=False)  # the last day of the period (UTC)
    watermark: Mapped[str] = mapped_column(String(200), nullable=False)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)  # how long the computation took
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)


class AttributionSnapshot(TenantMixin, Base):
    """The attribution report (six models side by side) of the ``days`` up to ``as_of`` at one level, computed from
    scratch by ``analytics.service.attribution_report`` and kept current by the worker's ``attribution`` job
    (``analytics.attribution_snapshots``); ``watermark`` names the source rows it was computed from."""

    __tablename__ = "attribution_snapshots"
    __table_args__ = (UniqueConstraint("workspace_id", "level", "days"),)

    level: Mapped[str] = mapped_column(String(16), nullable=False)  # channel or campaign
    days: Mapped[int] = mapped_column(Integer, nullable=False)
    as_of: Mapped[date] = mapped_column(Date, nullable=False)  # the last day of the period (UTC)
    watermark: Mapped[str] = mapped_column(String(200), nullable=False)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)  # how long the computation took
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
