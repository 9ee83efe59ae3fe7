"""Contact tables: contacts, identities, tags, property definitions, lifecycle stages and changes, merges."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType, UTCDateTime
from suppilo.engine.lifecycle import StageKind


class Contact(TenantMixin, TimestampMixin, Base):
    """A person, known (email or user id) or an anonymous visitor not yet identified."""

    __tablename__ = "contacts"
    __table_args__ = (
        Index(
            "uq_contacts_ws_email",
            "workspace_id",
            "email",
            unique=True,
            sqlite_where=text("email IS NOT NULL"),
            postgresql_where=text("email IS NOT NULL"),
        ),
        Index(
            "uq_contacts_ws_external_id",
            "workspace_id",
            "external_id",
            unique=True,
            sqlite_where=text("external_id IS NOT NULL"),
            postgresql_where=text("external_id IS NOT NULL"),
        ),
        # List and search are keyset-paginated on id (newest first): every filter index ends with id.
        Index("ix_contacts_ws_anonymous", "workspace_id", "is_anonymous", "id"),
        Index("ix_contacts_ws_stage", "workspace_id", "lifecycle_stage", "id"),
        Index("ix_contacts_ws_company", "workspace_id", "company_id", "id"),
        Index("ix_contacts_ws_owner", "workspace_id", "owner_id", "id"),
        Index("ix_contacts_ws_country", "workspace_id", "country", "id"),
        Index("ix_contacts_ws_last_name", "workspace_id", "last_name_lower"),
        Index("ix_contacts_ws_first_name", "workspace_id", "first_name_lower", "last_name_lower"),
        Index("ix_contacts_ws_created", "workspace_id", "created_at"),
        # Ids of deleted or merged-away contacts are never handed out again (audit log, merge records).
        {"sqlite_autoincrement": True},
    )

    email: Mapped[str | None] = mapped_column(String(320))
    external_id: Mapped[str | None] = mapped_column(String(200), comment="Segment userId")
    is_anonymous: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    first_name_lower: Mapped[str | None] = mapped_column(String(200))
    last_name_lower: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32), comment="E.164")
    language: Mapped[str | None] = mapped_column(String(8))
    country: Mapped[str | None] = mapped_column(String(2))
    region: Mapped[str | None] = mapped_column(String(100))
    city: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str | None] = mapped_column(String(64))
    job_title: Mapped[str | None] = mapped_column(String(200))
    owner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    company_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("companies.id", ondelete="SET NULL"))
    lifecycle_stage: Mapped[str] = mapped_column(String(32), nullable=False, default="awareness")
    lifecycle_stage_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    first_touch_channel: Mapped[str | None] = mapped_column(String(32))
    first_touch_source: Mapped[str | None] = mapped_column(String(200))
    first_touch_campaign: Mapped[str | None] = mapped_column(String(200))
    first_touch_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    latest_touch_channel: Mapped[str | None] = mapped_column(String(32))
    latest_touch_source: Mapped[str | None] = mapped_column(String(200))
    latest_touch_campaign: Mapped[str | None] = mapped_column(String(200))
    latest_touch_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class ContactIdentity(TenantMixin, Base):
    """An identifier seen for a contact: an anonymous id (cookie) or an external user id."""

    __tablename__ = "contact_identities"
    __table_args__ = (
        UniqueConstraint("workspace_id", "kind", "value"),
        Index("ix_contact_identities_contact", "contact_id"),
    )

    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    value: Mapped[str] = mapped_column(String(200), nullable=False)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ContactTag(Base):
    """A tag on a contact."""

    __tablename__ = "contact_tags"
    __table_args__ = (Index("ix_contact_tags_ws_tag", "workspace_id", "tag", "contact_id"),)

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(BigId, ForeignKey("workspaces.id", ondelete="CASCADE"))


class PropertyDefinition(TenantMixin, TimestampMixin, Base):
    """A typed custom property of contacts or companies (string, number, boolean, date, enum, multi_enum)."""

    __tablename__ = "property_definitions"
    __table_args__ = (UniqueConstraint("workspace_id", "object_type", "name"),)

    object_type: Mapped[str] = mapped_column(String(16), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    label: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    options: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    description: Mapped[str] = mapped_column(String(500), nullable=False, default="")


class LifecycleStage(TenantMixin, Base):
    """One stage of a workspace's lifecycle; ``kind`` is ``funnel`` (ordered) or ``side`` (e.g. inactive)."""

    __tablename__ = "lifecycle_stages"
    __table_args__ = (UniqueConstraint("workspace_id", "key"),)

    key: Mapped[str] = mapped_column(String(32), nullable=False)
    label: Mapped[str] = mapped_column(String(100), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[StageKind] = mapped_column(String(8), nullable=False, default="funnel")
    description: Mapped[str] = mapped_column(String(500), nullable=False, default="")


class StageChange(TenantMixin, Base):
    """A move of a contact between lifecycle stages, with its reason and who or what made it."""

    __tablename__ = "stage_changes"
    __table_args__ = (
        Index("ix_stage_changes_contact", "workspace_id", "contact_id", "changed_at"),
        Index("ix_stage_changes_ws_time", "workspace_id", "changed_at"),
    )

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    from_stage: Mapped[str | None] = mapped_column(String(32))
    to_stage: Mapped[str] = mapped_column(String(32), nullable=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="rule")
    actor: Mapped[str | None] = mapped_column(String(200))


class ContactMerge(TenantMixin, Base):
    """A record that ``merged_id`` was merged into ``contact_id``, with a snapshot of the merged row."""

    __tablename__ = "contact_merges"
    __table_args__ = (
        Index("ix_contact_merges_merged", "workspace_id", "merged_id"),
        Index("ix_contact_merges_contact", "workspace_id", "contact_id"),
    )

    contact_id: Mapped[int] = mapped_column(BigId, nullable=False)
    merged_id: Mapped[int] = mapped_column(BigId, nullable=False)
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
