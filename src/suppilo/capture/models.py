"""Forms and their submissions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType, UTCDateTime


class Form(TenantMixin, TimestampMixin, Base):
    """A form: fields mapped onto contact attributes, an optional consent checkbox with its exact text."""

    __tablename__ = "forms"
    __table_args__ = (UniqueConstraint("workspace_id", "slug"),)

    slug: Mapped[str] = mapped_column(String(64), nullable=False)
    public_key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    fields: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False, default=list)
    consent_text: Mapped[str | None] = mapped_column(Text)
    consent_version: Mapped[str | None] = mapped_column(String(32))
    consent_required: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    consent_topic: Mapped[str] = mapped_column(String(64), nullable=False, default="marketing")
    success_message: Mapped[str] = mapped_column(Text, nullable=False, default="Thank you!")
    redirect_url: Mapped[str | None] = mapped_column(String(2000))
    tags: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    language: Mapped[str | None] = mapped_column(String(8))
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class FormSubmission(TenantMixin, Base):
    """One accepted submission, with what was typed and the exact consent text shown."""

    __tablename__ = "form_submissions"
    __table_args__ = (
        Index("ix_form_submissions_form_time", "workspace_id", "form_id", "submitted_at"),
        Index("ix_form_submissions_contact", "workspace_id", "contact_id"),
    )

    form_id: Mapped[int] = mapped_column(BigId, ForeignKey("forms.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    consent_given: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    consent_text: Mapped[str | None] = mapped_column(Text)
    consent_version: Mapped[str | None] = mapped_column(String(32))
    page_url: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
