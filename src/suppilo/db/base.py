"""Declarative base with a naming convention and the columns every tenant table shares."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, MetaData
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from suppilo.db.types import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite so autoincrement works.
BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    """Now, timezone-aware UTC (only adapters and services call this; engine gets time as an argument)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Base of every table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class IdMixin:
    """Integer surrogate key."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)


class TenantMixin(IdMixin):
    """A row that belongs to one workspace; every query filters on ``workspace_id``."""

    workspace_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False, index=False
    )


class TimestampMixin:
    """Creation and update times."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
