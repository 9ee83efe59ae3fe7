"""Workspace, user, membership and API key tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, IdMixin, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType, UTCDateTime


class Workspace(IdMixin, TimestampMixin, Base):
    """A tenant: one business with its defaults and its postal address (required in marketing mail)."""

    __tablename__ = "workspaces"

    slug: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    default_language: Mapped[str] = mapped_column(String(8), nullable=False, default="en")
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="EUR")
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="UTC")
    country: Mapped[str] = mapped_column(String(2), nullable=False, default="FI")
    address_line1: Mapped[str | None] = mapped_column(String(200))
    address_line2: Mapped[str | None] = mapped_column(String(200))
    postal_code: Mapped[str | None] = mapped_column(String(32))
    city: Mapped[str | None] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    address_country: Mapped[str | None] = mapped_column(String(2))
    require_tracking_consent: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    site_domains: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)


class User(IdMixin, TimestampMixin, Base):
    """A person who logs in; belongs to workspaces through memberships."""

    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(8), nullable=False, default="en")
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="UTC")
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class Membership(IdMixin, Base):
    """A user's role in a workspace (admin, marketer, sales, analyst)."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id"),)

    workspace_id: Mapped[int] = mapped_column(BigId, ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32), nullable=False, default="marketer")


class ApiKey(TenantMixin, Base):
    """An API key; only its SHA-256 hash is stored (keys are 256-bit random, so no slow hash is needed)."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_workspace", "workspace_id"),)

    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditLog(TenantMixin, Base):
    """Who did what to which record (data-subject requests, key changes, merges, erasures)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_ws_time", "workspace_id", "occurred_at"),)

    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    subject_type: Mapped[str] = mapped_column(String(32), nullable=False)
    subject_id: Mapped[int | None] = mapped_column(BigId)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
