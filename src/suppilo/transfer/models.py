"""Import jobs started from the web interface: the uploaded file, the chosen column mapping, progress and result."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType, UTCDateTime


class ImportJob(TenantMixin, TimestampMixin, Base):
    """One uploaded CSV file on its way in: ``mapping`` (waiting for the column mapping) → ``queued`` →
    ``running`` (``rows_done``/``bytes_read`` of ``total_bytes``, ``failed`` so far) → ``done`` (``summary``) or
    ``failed`` (``error``). Only the job's runner writes progress; any request may read it."""

    __tablename__ = "import_jobs"
    __table_args__ = (Index("ix_import_jobs_ws_id", "workspace_id", "id"),)

    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="contacts")
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    stored_path: Mapped[str] = mapped_column(String(1000), nullable=False)
    error_path: Mapped[str | None] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="mapping")
    header: Mapped[list[str]] = mapped_column(JSONType, nullable=False, default=list)
    mapping: Mapped[dict[str, str]] = mapped_column(JSONType, nullable=False, default=dict)
    rows_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    bytes_read: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    total_bytes: Mapped[int] = mapped_column(BigId, nullable=False, default=0)
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
