"""Pydantic shapes of pipelines, deals, objections, tasks, activities and the forecast."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from suppilo.commerce.schemas import Currency

StageKind = Literal["open", "won", "lost"]
DealStatus = Literal["open", "won", "lost"]
QualificationStatus = Literal["unqualified", "qualified", "disqualified"]
TaskKind = Literal["call", "meeting", "email", "todo"]
ActivityKind = Literal["call", "meeting", "email", "note"]
GroupBy = Literal["month", "owner", "stage", "team", "country", "region"]
BoardGroupBy = Literal["owner", "team", "country", "region"]
StallGroupBy = Literal["owner", "team", "country", "region"]


def _strip(value: str) -> str:
    out = value.strip()
    if not out:
        raise ValueError("must not be empty")
    return out


Text = Annotated[str, AfterValidator(_strip)]
Minor = Annotated[int, Field(ge=0, le=10**15)]


class StageIn(BaseModel):
    """A stage of a pipeline as the client sends it (order is the list order)."""

    key: Text = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    label: Text = Field(min_length=1, max_length=200)
    probability: int = Field(ge=0, le=100)
    kind: StageKind = "open"


class PipelineCreate(BaseModel):
    """A new pipeline with its stages (at least one open, one won and one lost)."""

    name: Text = Field(min_length=1, max_length=200)
    requires_amount_to_win: bool = True
    is_default: bool = False
    stages: list[StageIn] = Field(min_length=3, max_length=50)


class PipelineUpdate(BaseModel):
    """Changes to a pipeline; ``stages`` replaces the set (a stage with deals cannot be dropped)."""

    name: Text | None = Field(default=None, min_length=1, max_length=200)
    requires_amount_to_win: bool | None = None
    is_default: bool | None = None
    stages: list[StageIn] | None = Field(default=None, min_length=3, max_length=50)


class StageRead(BaseModel):
    """A stage as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    key: str
    label: str
    position: int
    probability: int
    kind: str


class PipelineRead(BaseModel):
    """A pipeline with its stages in order."""

    id: int
    name: str
    requires_amount_to_win: bool
    is_default: bool
    stages: list[StageRead]


class DealCreate(BaseModel):
    """A new deal; without ``pipeline_id`` it goes to the default pipeline, without ``stage_id`` to its first
    open stage."""

    name: Text = Field(min_length=1, max_length=300)
    pipeline_id: int | None = None
    stage_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    owner_id: int | None = None
    amount_minor: Minor | None = None
    currency: Currency | None = None
    expected_close_date: date | None = None
    source_channel: str | None = Field(default=None, max_length=32)
    budget_minor: Minor | None = None
    budget_currency: Currency | None = None
    authority: str | None = Field(default=None, max_length=500)
    decision_maker: bool | None = None
    need: str | None = Field(default=None, max_length=10_000)
    timeline: str | None = Field(default=None, max_length=500)
    qualification_status: QualificationStatus = "unqualified"


class DealUpdate(BaseModel):
    """Changes to a deal; ``version`` must be the one last read (409 version_conflict otherwise)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    name: Text | None = Field(default=None, min_length=1, max_length=300)
    contact_id: int | None = None
    company_id: int | None = None
    owner_id: int | None = None
    amount_minor: Minor | None = None
    currency: Currency | None = None
    expected_close_date: date | None = None
    source_channel: str | None = Field(default=None, max_length=32)
    budget_minor: Minor | None = None
    budget_currency: Currency | None = None
    authority: str | None = Field(default=None, max_length=500)
    decision_maker: bool | None = None
    need: str | None = Field(default=None, max_length=10_000)
    timeline: str | None = Field(default=None, max_length=500)
    qualification_status: QualificationStatus | None = None


class DealMove(BaseModel):
    """Move a deal to another stage of its pipeline; ``lost_reason`` is required to lose it."""

    stage_id: int
    lost_reason: str | None = Field(default=None, max_length=500)
    version: int | None = Field(default=None, ge=1)


class DealRead(BaseModel):
    """A deal as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    pipeline_id: int
    stage_id: int
    status: str
    contact_id: int | None
    company_id: int | None
    owner_id: int | None
    amount_minor: int | None
    currency: str
    expected_close_date: date | None
    source_channel: str | None
    budget_minor: int | None
    budget_currency: str | None
    authority: str | None
    decision_maker: bool | None
    need: str | None
    timeline: str | None
    qualification_status: str
    lost_reason: str | None
    won_at: datetime | None
    lost_at: datetime | None
    stage_entered_at: datetime
    version: int
    created_at: datetime
    updated_at: datetime


class DealPage(BaseModel):
    """A page of deals."""

    items: list[DealRead]
    next_cursor: str | None


class StageChangeRead(BaseModel):
    """One move of a deal."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    from_stage_id: int | None
    to_stage_id: int
    changed_at: datetime
    actor: str | None
    reason: str


class DealContactIn(BaseModel):
    """A contact of the workspace to add to a deal's buying group, with an optional role."""

    contact_id: int
    role: str | None = Field(default=None, max_length=100)


class DealContactRead(BaseModel):
    """A person of a deal: the primary contact (``primary``) or a further one with its role."""

    contact_id: int
    role: str | None
    primary: bool
    name: str


class ObjectionCreate(BaseModel):
    """An objection and, once known, the answer to it."""

    text: Text = Field(min_length=1, max_length=10_000)
    response: str | None = Field(default=None, max_length=10_000)
    raised_at: AwareDatetime | None = None


class ObjectionRead(BaseModel):
    """An objection of a deal."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    deal_id: int
    text: str
    response: str | None
    raised_at: datetime


class TaskCreate(BaseModel):
    """A follow-up task; ``due_at`` must not be in the past. Instead of ``due_at``, ``due_in_working_hours`` counts
    that many working hours of the owner (their working hours and zone) from now."""

    title: Text = Field(min_length=1, max_length=300)
    kind: TaskKind = "todo"
    due_at: AwareDatetime | None = None
    due_in_working_hours: float | None = Field(default=None, gt=0, le=10_000)
    reminder_at: AwareDatetime | None = None
    deal_id: int | None = None
    contact_id: int | None = None
    owner_id: int | None = None


class TaskUpdate(BaseModel):
    """Changes to a task."""

    title: Text | None = Field(default=None, min_length=1, max_length=300)
    kind: TaskKind | None = None
    due_at: AwareDatetime | None = None
    reminder_at: AwareDatetime | None = None
    owner_id: int | None = None


class TaskRead(BaseModel):
    """A task as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    kind: str
    due_at: datetime
    done_at: datetime | None
    reminder_at: datetime | None
    deal_id: int | None
    contact_id: int | None
    owner_id: int | None
    created_at: datetime
    reminder_sent_at: datetime | None = None
    handoff_at: datetime | None = None
    responded_at: datetime | None = None


class ActivityCreate(BaseModel):
    """A call, meeting, email or note on a deal and/or a contact."""

    kind: ActivityKind
    body: str = Field(default="", max_length=100_000)
    occurred_at: AwareDatetime | None = None
    deal_id: int | None = None
    contact_id: int | None = None
    owner_id: int | None = None


class ActivityRead(BaseModel):
    """An activity as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    body: str
    occurred_at: datetime
    deal_id: int | None
    contact_id: int | None
    owner_id: int | None


class BoardMoney(BaseModel):
    """Sum of the amounts of a stage's deals in one currency."""

    currency: str
    amount_minor: int


class BoardGroup(BaseModel):
    """The deals of a stage that share an owner, team, country or region (``key`` null: none)."""

    key: str | None
    count: int
    sums: list[BoardMoney]


class BoardColumn(BaseModel):
    """One stage of the board: its deal count, sums per currency, the first deals and (with ``group_by``) the
    same per group."""

    stage: StageRead
    count: int
    sums: list[BoardMoney]
    deals: list[DealRead]
    overdue_tasks: int = 0
    groups: list[BoardGroup] | None = None


class Board(BaseModel):
    """A pipeline's board."""

    pipeline_id: int
    columns: list[BoardColumn]
    group_by: str | None = None


class ForecastTotals(BaseModel):
    """Best case, weighted and commit in one currency; ``converted`` when other currencies were converted in."""

    currency: str
    converted: bool
    count: int
    best_case_minor: int
    weighted_minor: int
    commit_minor: int


class ForecastGroupRead(BaseModel):
    """One group (a month ``YYYY-MM``, an owner id, a stage key, a team name, a country code or a region; null:
    none known)."""

    key: str | None
    totals: list[ForecastTotals]


class VelocityRead(BaseModel):
    """Average days deals spent in a stage (completed stays)."""

    pipeline_id: int
    stage_key: str
    stays: int
    average_days: float | None


class ConversionRead(BaseModel):
    """How many deals that entered a stage went further."""

    pipeline_id: int
    stage_key: str
    entered: int
    advanced: int
    rate: float | None


class StallGroupRead(BaseModel):
    """Open and stalled deals (of one stage, or of all stages) that share an owner, team or territory (country or
    region); ``key`` null: none known."""

    key: str | None
    open_deals: int
    stalled: int


class StallRead(BaseModel):
    """Where deals stall: open deals in a stage, and those in it longer than ``threshold_days`` (twice the
    stage's average stay; null without completed stays)."""

    pipeline_id: int
    stage_key: str
    open_deals: int
    stalled: int
    threshold_days: float | None
    groups: list[StallGroupRead] | None = None


class ForecastRead(BaseModel):
    """The forecast of open deals."""

    group_by: str
    currency: str
    rates_source: str
    groups: list[ForecastGroupRead]
    velocity: list[VelocityRead]
    conversion: list[ConversionRead]
    stalls: list[StallRead]
    stalls_by: str | None = None
    stall_totals: list[StallGroupRead] | None = None


# --- proposals --------------------------------------------------------------------------------------------------------


class ProposalLineIn(BaseModel):
    """A line: a catalogue product by ``product_id`` or ``sku``; ``unit_price_minor`` defaults to the product's price
    when the currencies match and is required otherwise."""

    product_id: int | None = None
    sku: str | None = Field(default=None, max_length=100)
    name: str | None = Field(default=None, max_length=300)
    quantity: int = Field(default=1, ge=1, le=1_000_000)
    unit_price_minor: int | None = Field(default=None, ge=0)


class ProposalCreate(BaseModel):
    """A proposal on a deal; ``discount_bp`` (basis points of the subtotal) or ``discount_minor`` (fixed)."""

    title: str = Field(min_length=1, max_length=300)
    currency: Currency | None = None
    valid_until: date
    discount_bp: int | None = Field(default=None, ge=0, le=10_000)
    discount_minor: int | None = Field(default=None, ge=0)
    lines: list[ProposalLineIn] = Field(min_length=1, max_length=500)


class ProposalUpdate(BaseModel):
    """Change a draft or sent proposal; ``lines`` replaces all lines; ``status`` draft, sent or expired."""

    title: str | None = Field(default=None, min_length=1, max_length=300)
    valid_until: date | None = None
    discount_bp: int | None = Field(default=None, ge=0, le=10_000)
    discount_minor: int | None = Field(default=None, ge=0)
    lines: list[ProposalLineIn] | None = Field(default=None, min_length=1, max_length=500)
    status: Literal["draft", "sent", "expired"] | None = None


class ProposalLineRead(BaseModel):
    """A proposal line as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    product_id: int | None
    name: str
    quantity: int
    unit_price_minor: int
    line_total_minor: int


class ProposalRead(BaseModel):
    """A proposal with its lines and server-computed totals."""

    id: int
    deal_id: int
    title: str
    currency: str
    valid_until: date
    discount_bp: int | None
    discount_fixed_minor: int | None
    subtotal_minor: int
    discount_minor: int
    total_minor: int
    status: str
    lines: list[ProposalLineRead]
    created_at: datetime
    updated_at: datetime


# --- assignment, hand-offs ------------------------------------------------------------------------------------------

Distribution = Literal["round_robin", "load_balanced"]


class TeamIn(BaseModel):
    """A sales team: a name and its members (user ids of workspace members); ``inactive`` members stay in the team
    but get no new assignments."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=200)
    members: list[int] = Field(default_factory=list, max_length=500)
    inactive: list[int] = Field(default_factory=list, max_length=500)


class TeamMemberRead(BaseModel):
    """A member of a team."""

    user_id: int
    active: bool


class TeamRead(BaseModel):
    """A team with its members."""

    id: int
    name: str
    members: list[TeamMemberRead]


class AssignmentRuleIn(BaseModel):
    """An owner-assignment rule. ``conditions`` (all must hold; an empty object matches everyone):
    ``country`` / ``region`` / ``industry`` (lists, case-insensitive), ``company_size_min`` /
    ``company_size_max`` (employees, inclusive). The target is ``user_id`` or ``team_id`` (with ``distribution``)."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=200)
    conditions: dict[str, object] = Field(default_factory=dict)
    user_id: int | None = None
    team_id: int | None = None
    distribution: Distribution = "round_robin"
    active: bool = True


class AssignmentRulesIn(BaseModel):
    """The workspace's rules in order (replaces the set)."""

    model_config = ConfigDict(extra="forbid")

    rules: list[AssignmentRuleIn] = Field(max_length=500)


class AssignmentRuleRead(BaseModel):
    """A stored rule."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    position: int
    name: str
    conditions: dict[str, object]
    user_id: int | None
    team_id: int | None
    distribution: str
    active: bool


class SalesSettingsIn(BaseModel):
    """Hand-off settings: ``assign_on_stage`` (a lifecycle stage such as ``decision``; null turns the contact
    trigger off), ``response_hours`` (working hours to the first-contact task's due time) and the workspace's
    working hours (without ``timezone`` each owner's own zone is used)."""

    model_config = ConfigDict(extra="forbid")

    assign_on_stage: str | None = Field(default=None, max_length=32)
    response_hours: int = Field(default=4, ge=0, le=1000)
    handoff_task_title: Text = Field(default="First contact", min_length=1, max_length=200)
    working_hours: dict[str, object] = Field(default_factory=dict)


class SalesSettingsRead(BaseModel):
    """The stored hand-off settings."""

    model_config = ConfigDict(from_attributes=True)

    assign_on_stage: str | None
    response_hours: int
    handoff_task_title: str
    working_hours: dict[str, object]


class WorkingHoursIn(BaseModel):
    """A user's own working hours (see docs/sales.md for the forms); an empty object removes them."""

    model_config = ConfigDict(extra="forbid")

    working_hours: dict[str, object]


class AssignRequest(BaseModel):
    """Assign an owner to a contact or a deal by the rules (``dry_run``: only say who it would be)."""

    model_config = ConfigDict(extra="forbid")

    contact_id: int | None = None
    deal_id: int | None = None
    dry_run: bool = False
    force: bool = False


class AssignmentRead(BaseModel):
    """An owner assignment and the rule that made it."""

    model_config = ConfigDict(from_attributes=True)

    id: int | None = None
    subject_type: str
    subject_id: int
    user_id: int | None
    rule_id: int | None
    rule_name: str
    team_id: int | None
    distribution: str
    trigger: str
    task_id: int | None = None
    assigned_at: datetime | None = None


class HandoffRead(BaseModel):
    """A hand-off task with its response: ``status`` is open, overdue, met or late; response times in seconds
    (elapsed, and within the owner's working hours)."""

    task: TaskRead
    status: Literal["open", "overdue", "met", "late"]
    response_seconds: int | None
    response_working_seconds: int | None
