"""Journeys, their versions, enrollments (the durable state of each contact's walk), the timeline, and cursors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType, UTCDateTime

JOURNEY_STATES = ("draft", "active", "paused", "archived")


class Journey(TenantMixin, TimestampMixin, Base):
    """A journey: its name, state and current version; ``trigger_*`` copy the current trigger for fast lookup."""

    __tablename__ = "journeys"
    __table_args__ = (Index("ix_journeys_ws_status", "workspace_id", "status", "trigger_type"),)

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="draft")
    current_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    trigger_type: Mapped[str] = mapped_column(String(32), nullable=False)
    playbook: Mapped[str | None] = mapped_column(String(64))
    # The next occurrence of a schedule trigger, and the last time a date trigger was evaluated.
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class JourneyVersion(TenantMixin, Base):
    """One saved version of a journey's definition (never changed once saved)."""

    __tablename__ = "journey_versions"
    __table_args__ = (UniqueConstraint("journey_id", "version"),)

    journey_id: Mapped[int] = mapped_column(BigId, ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False, default="")


class Enrollment(TenantMixin, Base):
    """One contact's walk through one version of a journey.

    ``status`` is ``active`` (it waits: ``due_at`` says when it is next looked at) or ``ended`` (``end_reason``).
    ``phase`` is ``step`` (the runner advances it) or ``webhook`` (the webhook caller owns it until ``due_at``).
    ``group`` is ``treatment`` or ``holdout`` (a split's holdout gets nothing and is only watched for the goal).
    """

    __tablename__ = "journey_enrollments"
    __table_args__ = (
        UniqueConstraint("journey_id", "entry_key"),
        Index("ix_journey_enrollments_due", "status", "phase", "due_at"),
        Index("ix_journey_enrollments_contact", "workspace_id", "contact_id", "status"),
        Index("ix_journey_enrollments_journey", "workspace_id", "journey_id", "status", "step"),
        Index(
            "uq_journey_enrollments_one_active",
            "journey_id",
            "contact_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    journey_id: Mapped[int] = mapped_column(BigId, ForeignKey("journeys.id", ondelete="CASCADE"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    entry_key: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False, default="active")
    phase: Mapped[str] = mapped_column(String(8), nullable=False, default="step")
    group: Mapped[str] = mapped_column(String(10), nullable=False, default="treatment")
    step: Mapped[str] = mapped_column(String(64), nullable=False)
    step_since: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    wait_event: Mapped[str | None] = mapped_column(String(200))
    event_arrived: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    goal_reached: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    webhook_outcome: Mapped[str | None] = mapped_column(String(8))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    visits: Mapped[dict[str, int]] = mapped_column(JSONType, nullable=False, default=dict)
    variants: Mapped[dict[str, str]] = mapped_column(JSONType, nullable=False, default=dict)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(String(16))
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))


class EnrollmentStep(TenantMixin, Base):
    """A line of an enrollment's timeline: a step passed, with its outcome (and the message it queued)."""

    __tablename__ = "journey_steps_log"
    __table_args__ = (
        Index("ix_journey_steps_log_enrollment", "enrollment_id", "id"),
        Index("ix_journey_steps_log_journey", "workspace_id", "journey_id", "step_id"),
    )

    enrollment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("journey_enrollments.id", ondelete="CASCADE"), nullable=False
    )
    journey_id: Mapped[int] = mapped_column(BigId, nullable=False)
    step_id: Mapped[str] = mapped_column(String(64), nullable=False)
    outcome: Mapped[str] = mapped_column(String(64), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    outbox_id: Mapped[int | None] = mapped_column(BigId)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
