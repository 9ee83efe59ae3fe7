"""Company table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType


class Company(TenantMixin, TimestampMixin, Base):
    """A company identified by its normalised web domain."""

    __tablename__ = "companies"
    __table_args__ = (
        Index(
            "uq_companies_ws_domain",
            "workspace_id",
            "domain",
            unique=True,
            sqlite_where=text("domain IS NOT NULL"),
            postgresql_where=text("domain IS NOT NULL"),
        ),
        Index("ix_companies_ws_name", "workspace_id", "name_lower"),
        Index("ix_companies_ws_owner", "workspace_id", "owner_id"),
        {"sqlite_autoincrement": True},
    )

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    name_lower: Mapped[str] = mapped_column(String(200), nullable=False)
    domain: Mapped[str | None] = mapped_column(String(253))
    industry: Mapped[str | None] = mapped_column(String(100))
    employees: Mapped[int | None] = mapped_column(Integer)
    annual_revenue_minor: Mapped[int | None] = mapped_column(BigInteger)
    revenue_currency: Mapped[str | None] = mapped_column(String(3))
    country: Mapped[str | None] = mapped_column(String(2))
    city: Mapped[str | None] = mapped_column(String(100))
    owner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    external_id: Mapped[str | None] = mapped_column(String(200), comment="Segment groupId")
