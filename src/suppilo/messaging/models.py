"""Template tables: a template per workspace and key, with one variant per language."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import UTCDateTime


class Template(TenantMixin, TimestampMixin, Base):
    """A message template: ``kind`` is ``marketing`` or ``transactional``; ``status`` ``draft`` or ``published``."""

    __tablename__ = "message_templates"
    __table_args__ = (
        UniqueConstraint("workspace_id", "key"),
        Index("ix_message_templates_ws_kind", "workspace_id", "kind"),
    )

    key: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    description: Mapped[str] = mapped_column(String(1000), nullable=False, default="")
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="marketing")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="draft")
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    variants: Mapped[list[TemplateVariant]] = relationship(
        back_populates="template",
        cascade="all, delete-orphan",
        order_by="TemplateVariant.language",
        lazy="selectin",
    )


class TemplateVariant(TenantMixin, TimestampMixin, Base):
    """The content of a template in one language; ``text`` is made from ``html`` when empty."""

    __tablename__ = "message_template_variants"
    __table_args__ = (UniqueConstraint("workspace_id", "template_id", "language"),)

    template_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("message_templates.id", ondelete="CASCADE"), nullable=False
    )
    language: Mapped[str] = mapped_column(String(8), nullable=False)
    subject: Mapped[str] = mapped_column(String(500), nullable=False)
    preheader: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    html: Mapped[str] = mapped_column(Text, nullable=False)
    text: Mapped[str | None] = mapped_column(Text)

    template: Mapped[Template] = relationship(back_populates="variants")
