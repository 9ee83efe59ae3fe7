"""Scoring tables: ideal customer profiles, the workspace's scoring settings, stored scores and their history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType, UTCDateTime


class IdealCustomerProfile(TenantMixin, TimestampMixin, Base):
    """A named ICP: weighted criteria (``suppilo.engine.scoring.IcpDefinition`` as JSON); only active ones score."""

    __tablename__ = "ideal_customer_profiles"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(String(2000), nullable=False, default="")
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class ScoringSettings(Base):
    """Per workspace: engagement rules (None: the defaults), the predictive model, and the scoring job's cursors."""

    __tablename__ = "scoring_settings"

    workspace_id: Mapped[int] = mapped_column(BigId, ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    engagement: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    predictive: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    event_cursor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    fit_cursor_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    events_scanned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fit_full_pending: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    engagement_full_pending: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ScoreExplanation(TenantMixin, Base):
    """A fit explanation (the per-criterion lines as JSON) stored once per workspace and distinct text.

    Contacts sharing the facts an ICP reads share their explanation, so a fit score row references one of these
    (``ContactScore.explanation_id``) instead of carrying ~700 bytes of its own. ``digest`` is the BLAKE2b-128 hex
    of the JSON text as written (``orjson``); rows are never changed, only added.
    """

    __tablename__ = "score_explanations"
    __table_args__ = (UniqueConstraint("workspace_id", "digest"),)

    digest: Mapped[str] = mapped_column(String(32), nullable=False)
    explanation: Mapped[list[Any]] = mapped_column(JSONType, nullable=False)


class ContactScore(TenantMixin, Base):
    """A contact's score of one ``kind`` (fit, engagement, predictive) with its explanation.

    ``score`` is the value at ``as_of``; an engagement score decays from there (``decay_key``, ``half_life_seconds``
    let filters compare the decayed value; ``state`` holds the per-rule cap counts). A fit row's explanation is the
    shared ``score_explanations`` row ``explanation_id`` (its own ``explanation`` is then empty; a row without one,
    written before explanations were shared, carries it inline); other kinds carry theirs inline.
    """

    __tablename__ = "contact_scores"
    __table_args__ = (
        UniqueConstraint("workspace_id", "contact_id", "kind"),
        Index("ix_contact_scores_ws_kind_score", "workspace_id", "kind", "score"),
        Index("ix_contact_scores_ws_kind_key", "workspace_id", "kind", "decay_key"),
    )

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    grade: Mapped[str | None] = mapped_column(String(1))
    icp_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ideal_customer_profiles.id", ondelete="SET NULL"))
    explanation: Mapped[list[Any]] = mapped_column(JSONType, nullable=False, default=list)
    # no foreign key on purpose: explanation rows are never changed or deleted except with their workspace, and a
    # key would make every delete there look for referencing rows in this (large, unindexed by it) table
    explanation_id: Mapped[int | None] = mapped_column(BigId)
    state: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    decay_key: Mapped[float | None] = mapped_column(Float)
    half_life_seconds: Mapped[float | None] = mapped_column(Float)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class CompanyScore(TenantMixin, Base):
    """A company's fit score against the workspace's ICPs, with its explanation."""

    __tablename__ = "company_scores"
    __table_args__ = (
        UniqueConstraint("workspace_id", "company_id", "kind"),
        Index("ix_company_scores_ws_kind_score", "workspace_id", "kind", "score"),
    )

    company_id: Mapped[int] = mapped_column(BigId, ForeignKey("companies.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default="fit")
    score: Mapped[float] = mapped_column(Float, nullable=False)
    grade: Mapped[str | None] = mapped_column(String(1))
    icp_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ideal_customer_profiles.id", ondelete="SET NULL"))
    explanation: Mapped[list[Any]] = mapped_column(JSONType, nullable=False, default=list)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class ScoreChange(TenantMixin, Base):
    """History: a contact's score of ``kind`` became ``score`` (``grade``) at ``at`` because of ``reason``."""

    __tablename__ = "score_changes"
    __table_args__ = (Index("ix_score_changes_ws_contact_at", "workspace_id", "contact_id", "at"),)

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    previous: Mapped[float | None] = mapped_column(Float)
    grade: Mapped[str | None] = mapped_column(String(1))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False, default="")
