"""Sales pipelines with stages, deals with BANT qualification and stage history, objections, tasks, activities."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, TenantMixin, TimestampMixin
from suppilo.db.types import JSONType, UTCDateTime


class Pipeline(TenantMixin, TimestampMixin, Base):
    """A sales pipeline of a workspace; one of them is the default."""

    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    requires_amount_to_win: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class PipelineStage(TenantMixin, Base):
    """An ordered stage of a pipeline with its win probability; ``kind`` is open, won or lost."""

    __tablename__ = "pipeline_stages"
    __table_args__ = (UniqueConstraint("pipeline_id", "key"), Index("ix_pipeline_stages_ws", "workspace_id"))

    pipeline_id: Mapped[int] = mapped_column(BigId, ForeignKey("pipelines.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(64), nullable=False)
    label: Mapped[str] = mapped_column(String(200), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    probability: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False, default="open")


class Deal(TenantMixin, TimestampMixin, Base):
    """A sales opportunity; ``version`` guards concurrent edits."""

    __tablename__ = "deals"
    __table_args__ = (
        # Board: sums per stage and currency of a pipeline, and the newest deals of each stage.
        Index("ix_deals_ws_pipeline_stage", "workspace_id", "pipeline_id", "stage_id", "currency"),
        Index("ix_deals_ws_stage_id", "workspace_id", "stage_id", "id"),
        Index("ix_deals_ws_owner", "workspace_id", "owner_id"),
        Index("ix_deals_ws_status", "workspace_id", "status"),
        Index("ix_deals_contact", "workspace_id", "contact_id"),
    )

    pipeline_id: Mapped[int] = mapped_column(BigId, ForeignKey("pipelines.id", ondelete="CASCADE"), nullable=False)
    stage_id: Mapped[int] = mapped_column(BigId, ForeignKey("pipeline_stages.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False, default="open")
    name: Mapped[str] = mapped_column(String(300), nullable=False)
    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="SET NULL"))
    company_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("companies.id", ondelete="SET NULL"))
    owner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    expected_close_date: Mapped[date | None] = mapped_column(Date)
    source_channel: Mapped[str | None] = mapped_column(String(32))
    budget_minor: Mapped[int | None] = mapped_column(BigInteger)
    budget_currency: Mapped[str | None] = mapped_column(String(3))
    authority: Mapped[str | None] = mapped_column(String(500))
    decision_maker: Mapped[bool | None] = mapped_column(Boolean)
    need: Mapped[str | None] = mapped_column(Text)
    timeline: Mapped[str | None] = mapped_column(String(500))
    qualification_status: Mapped[str] = mapped_column(String(16), nullable=False, default="unqualified")
    lost_reason: Mapped[str | None] = mapped_column(String(500))
    won_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lost_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stage_entered_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class DealContact(TenantMixin, Base):
    """A further person of a deal's buying group (the deal's own ``contact_id`` is its primary contact), with a
    role such as "decision maker", "champion" or "user"."""

    __tablename__ = "deal_contacts"
    __table_args__ = (
        UniqueConstraint("deal_id", "contact_id"),
        Index("ix_deal_contacts_ws_contact", "workspace_id", "contact_id"),
    )

    deal_id: Mapped[int] = mapped_column(BigId, ForeignKey("deals.id", ondelete="CASCADE"), nullable=False)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False)
    role: Mapped[str | None] = mapped_column(String(100))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class DealStageChange(TenantMixin, Base):
    """A move of a deal between stages (the first row, without ``from_stage_id``, is its opening)."""

    __tablename__ = "deal_stage_changes"
    __table_args__ = (Index("ix_deal_stage_changes_deal", "workspace_id", "deal_id", "changed_at"),)

    deal_id: Mapped[int] = mapped_column(BigId, ForeignKey("deals.id", ondelete="CASCADE"), nullable=False)
    from_stage_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("pipeline_stages.id", ondelete="SET NULL"))
    to_stage_id: Mapped[int] = mapped_column(BigId, ForeignKey("pipeline_stages.id", ondelete="CASCADE"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    actor: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(500), nullable=False, default="")


class DealObjection(TenantMixin, Base):
    """An objection a prospect raised, and how it was answered."""

    __tablename__ = "deal_objections"
    __table_args__ = (Index("ix_deal_objections_deal", "workspace_id", "deal_id"),)

    deal_id: Mapped[int] = mapped_column(BigId, ForeignKey("deals.id", ondelete="CASCADE"), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    response: Mapped[str | None] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Task(TenantMixin, TimestampMixin, Base):
    """A follow-up task with a due time, an owner and an optional reminder."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_ws_owner_due", "workspace_id", "owner_id", "due_at"),
        Index("ix_tasks_deal", "workspace_id", "deal_id"),
        # The reminder job walks unsent reminders by time across workspaces.
        Index("ix_tasks_reminder_due", "reminder_sent_at", "reminder_at"),
        Index("ix_tasks_ws_handoff", "workspace_id", "handoff_at"),
        # Overdue lists and the board's overdue counts: open tasks by due time.
        Index(
            "ix_tasks_ws_open_due",
            "workspace_id",
            "due_at",
            sqlite_where=text("done_at IS NULL"),
            postgresql_where=text("done_at IS NULL"),
        ),
    )

    deal_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("deals.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="SET NULL"))
    owner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(8), nullable=False, default="todo")
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reminder_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reminder_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A hand-off task (an owner was assigned automatically): when, and when the owner first responded (the task
    # done or the first activity on its contact or deal after the hand-off).
    handoff_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Activity(TenantMixin, Base):
    """A logged call, meeting, email or note on a deal or a contact."""

    __tablename__ = "activities"
    __table_args__ = (
        Index("ix_activities_deal", "workspace_id", "deal_id", "occurred_at"),
        Index("ix_activities_contact", "workspace_id", "contact_id", "occurred_at"),
    )

    deal_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("deals.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    owner_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False, default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Proposal(TenantMixin, TimestampMixin, Base):
    """A priced offer on a deal: lines from the catalogue, a discount and totals in one currency, valid until a day."""

    __tablename__ = "proposals"
    __table_args__ = (Index("ix_proposals_deal", "workspace_id", "deal_id"),)

    deal_id: Mapped[int] = mapped_column(BigId, ForeignKey("deals.id", ondelete="CASCADE"), nullable=False)
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    valid_until: Mapped[date] = mapped_column(Date, nullable=False)
    discount_bp: Mapped[int | None] = mapped_column(Integer)
    discount_fixed_minor: Mapped[int | None] = mapped_column(BigInteger)
    subtotal_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    discount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    total_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    status: Mapped[str] = mapped_column(String(8), nullable=False, default="draft")


class ProposalLine(TenantMixin, Base):
    """A line of a proposal: a catalogue product, a quantity and a unit price in the proposal's currency."""

    __tablename__ = "proposal_lines"
    __table_args__ = (Index("ix_proposal_lines_proposal", "workspace_id", "proposal_id", "position"),)

    proposal_id: Mapped[int] = mapped_column(BigId, ForeignKey("proposals.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    product_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("products.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(300), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    unit_price_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    line_total_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SalesTeam(TenantMixin, TimestampMixin, Base):
    """A team of sales users; ``rr_counter`` is the round-robin pointer (advanced by one atomic UPDATE)."""

    __tablename__ = "sales_teams"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    name: Mapped[str] = mapped_column(String(200), nullable=False)
    rr_counter: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class SalesTeamMember(TenantMixin, Base):
    """A user in a team; ``active`` false keeps them out of the distribution (holiday, full pipeline)."""

    __tablename__ = "sales_team_members"
    __table_args__ = (UniqueConstraint("team_id", "user_id"), Index("ix_sales_team_members_ws", "workspace_id"))

    team_id: Mapped[int] = mapped_column(BigId, ForeignKey("sales_teams.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class AssignmentRule(TenantMixin, Base):
    """An ordered owner-assignment rule: conditions (country, region, industry, company size) and a target user,
    or a team with round-robin or load-balanced distribution. The first matching rule wins."""

    __tablename__ = "assignment_rules"
    __table_args__ = (Index("ix_assignment_rules_ws", "workspace_id", "position"),)

    position: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    conditions: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"))
    team_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("sales_teams.id", ondelete="CASCADE"))
    distribution: Mapped[str] = mapped_column(String(16), nullable=False, default="round_robin")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class OwnerAssignment(TenantMixin, Base):
    """Who was made owner of a contact or deal, by which rule and how (the assignment log)."""

    __tablename__ = "owner_assignments"
    __table_args__ = (Index("ix_owner_assignments_subject", "workspace_id", "subject_type", "subject_id"),)

    subject_type: Mapped[str] = mapped_column(String(8), nullable=False)
    subject_id: Mapped[int] = mapped_column(BigId, nullable=False)
    user_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("users.id", ondelete="SET NULL"))
    rule_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("assignment_rules.id", ondelete="SET NULL"))
    rule_name: Mapped[str] = mapped_column(String(200), nullable=False)
    team_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("sales_teams.id", ondelete="SET NULL"))
    distribution: Mapped[str] = mapped_column(String(16), nullable=False)
    trigger: Mapped[str] = mapped_column(String(64), nullable=False)
    task_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("tasks.id", ondelete="SET NULL"))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class SalesSettings(TenantMixin, Base):
    """A workspace's hand-off settings: the lifecycle stage that triggers assignment, the response target in working
    hours and the default working hours."""

    __tablename__ = "sales_settings"
    __table_args__ = (UniqueConstraint("workspace_id"),)

    assign_on_stage: Mapped[str | None] = mapped_column(String(32))
    response_hours: Mapped[int] = mapped_column(Integer, nullable=False, default=4)
    handoff_task_title: Mapped[str] = mapped_column(String(300), nullable=False, default="First contact")
    working_hours: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)


class UserWorkingHours(TenantMixin, Base):
    """A user's own working hours in a workspace (overrides the workspace's)."""

    __tablename__ = "user_working_hours"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id"),)

    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    working_hours: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)


class ForecastSnapshot(TenantMixin, Base):
    """The forecast of one (grouping, pipeline, stalls grouping) as ``deals.forecast.workspace_forecast`` answered it
    at ``computed_at``; the web forecast page reads it and the worker's ``forecast`` job keeps it current
    (``deals.forecast_snapshots``). ``watermark`` names the source rows it was computed from."""

    __tablename__ = "forecast_snapshots"
    __table_args__ = (
        UniqueConstraint("workspace_id", "group_by", "pipeline_key", "stalls_by", name="uq_forecast_snapshots_key"),
    )

    group_by: Mapped[str] = mapped_column(String(16), nullable=False)
    pipeline_key: Mapped[int] = mapped_column(BigInteger, nullable=False)  # the pipeline's id, 0 for all pipelines
    stalls_by: Mapped[str] = mapped_column(String(16), nullable=False)
    watermark: Mapped[str] = mapped_column(String(200), nullable=False)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)  # how long the computation took
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
