"""HTTP routes: sales pipeline — pipelines and boards, deals with moves and objections, tasks, activities,
forecast."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http
from sqlalchemy.orm import Session

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession, Writer
from suppilo.adapters.http.routers.contacts import actor_of
from suppilo.commerce.money import is_currency
from suppilo.deals import assignment, proposals, service
from suppilo.deals import forecast as deals_forecast
from suppilo.deals.models import Pipeline, SalesTeam
from suppilo.deals.schemas import (
    ActivityCreate,
    ActivityRead,
    AssignmentRead,
    AssignmentRuleRead,
    AssignmentRulesIn,
    AssignRequest,
    Board,
    BoardColumn,
    BoardGroup,
    BoardGroupBy,
    BoardMoney,
    DealContactIn,
    DealContactRead,
    DealCreate,
    DealMove,
    DealPage,
    DealRead,
    DealStatus,
    DealUpdate,
    ForecastRead,
    GroupBy,
    HandoffRead,
    ObjectionCreate,
    ObjectionRead,
    PipelineCreate,
    PipelineRead,
    PipelineUpdate,
    ProposalCreate,
    ProposalRead,
    ProposalUpdate,
    SalesSettingsIn,
    SalesSettingsRead,
    StageChangeRead,
    StageRead,
    StallGroupBy,
    TaskCreate,
    TaskRead,
    TaskUpdate,
    TeamIn,
    TeamMemberRead,
    TeamRead,
    WorkingHoursIn,
)
from suppilo.errors import Conflict, DomainError, NotFound

router = APIRouter(prefix="/api/v1", tags=["deals"])

Limit = Annotated[int, Query(ge=1, le=200)]


def _pipeline_reads(session: Session, workspace_id: int, pipelines: list[Pipeline]) -> list[PipelineRead]:
    stages = service.pipeline_stages(session, workspace_id, [p.id for p in pipelines])
    return [
        PipelineRead(
            id=p.id,
            name=p.name,
            requires_amount_to_win=p.requires_amount_to_win,
            is_default=p.is_default,
            stages=[StageRead.model_validate(s) for s in stages[p.id]],
        )
        for p in pipelines
    ]


# --- pipelines ------------------------------------------------------------------------------------------------------


@router.get("/pipelines", response_model=list[PipelineRead])
def list_pipelines(principal: Reader, session: DbSession) -> list[PipelineRead]:
    """The workspace's pipelines, default first (the default pipeline is created on first use)."""
    pipelines = service.list_pipelines(session, principal.workspace_id)
    return _pipeline_reads(session, principal.workspace_id, pipelines)


@router.post("/pipelines", response_model=PipelineRead, status_code=http.HTTP_201_CREATED)
def create_pipeline(data: PipelineCreate, principal: Writer, session: DbSession) -> PipelineRead:
    """A pipeline with ordered stages (at least one open, one won and one lost)."""
    pipeline = service.create_pipeline(session, principal.workspace_id, data)
    return _pipeline_reads(session, principal.workspace_id, [pipeline])[0]


@router.get("/pipelines/{pipeline_id}", response_model=PipelineRead)
def read_pipeline(pipeline_id: int, principal: Reader, session: ReadSession) -> PipelineRead:
    """One pipeline with its stages."""
    pipeline = service.get_pipeline(session, principal.workspace_id, pipeline_id)
    return _pipeline_reads(session, principal.workspace_id, [pipeline])[0]


@router.patch("/pipelines/{pipeline_id}", response_model=PipelineRead)
def update_pipeline(pipeline_id: int, data: PipelineUpdate, principal: Writer, session: DbSession) -> PipelineRead:
    """Rename, flag or restage a pipeline (stages matched by key; a dropped stage must hold no deals)."""
    pipeline = service.update_pipeline(session, principal.workspace_id, pipeline_id, data)
    return _pipeline_reads(session, principal.workspace_id, [pipeline])[0]


@router.delete("/pipelines/{pipeline_id}", status_code=http.HTTP_204_NO_CONTENT)
def delete_pipeline(pipeline_id: int, principal: Writer, session: DbSession) -> Response:
    """Remove a pipeline that holds no deals."""
    service.delete_pipeline(session, principal.workspace_id, pipeline_id)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.get("/pipelines/{pipeline_id}/board", response_model=Board)
def pipeline_board(
    pipeline_id: int,
    principal: Reader,
    session: ReadSession,
    per_stage: Annotated[int, Query(ge=0, le=200)] = 20,
    group_by: BoardGroupBy | None = None,
    overdue: bool = False,
) -> Board:
    """Per stage: the number of deals, the amounts summed per currency, the newest ``per_stage`` deals and the
    number of overdue open tasks on them; with ``group_by`` (owner, team, country, region) also the counts and sums
    per group. ``overdue=true``: only deals with an overdue open task (counts and sums too)."""
    columns = service.board(session, principal.workspace_id, pipeline_id, per_stage=per_stage, overdue=overdue)
    late = service.overdue_tasks_per_stage(session, principal.workspace_id, pipeline_id)
    grouped = deals_forecast.board_groups(session, principal.workspace_id, pipeline_id, group_by) if group_by else None
    return Board(
        pipeline_id=pipeline_id,
        group_by=group_by,
        columns=[
            BoardColumn(
                stage=StageRead.model_validate(stage),
                count=count,
                sums=[BoardMoney(currency=c, amount_minor=a) for c, a in sums],
                deals=[DealRead.model_validate(d) for d in deals],
                overdue_tasks=late.get(stage.id, 0),
                groups=None
                if grouped is None
                else [
                    BoardGroup(key=k, count=n, sums=[BoardMoney(currency=c, amount_minor=a) for c, a in group_sums])
                    for k, n, group_sums in grouped.get(stage.id, [])
                ],
            )
            for stage, count, sums, deals in columns
        ],
    )


# --- deals ----------------------------------------------------------------------------------------------------------


@router.post("/deals", response_model=DealRead, status_code=http.HTTP_201_CREATED)
def create_deal(data: DealCreate, principal: Writer, session: DbSession) -> DealRead:
    """Open a deal; its contact moves to the 'decision' lifecycle stage."""
    deal = service.create_deal(session, principal.workspace_id, data, actor=actor_of(session, principal))
    return DealRead.model_validate(deal)


@router.get("/deals", response_model=DealPage)
def list_deals(
    principal: Reader,
    session: ReadSession,
    pipeline_id: int | None = None,
    stage_id: int | None = None,
    owner_id: int | None = None,
    contact_id: int | None = None,
    status: DealStatus | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> DealPage:
    """Deals, newest first, a page at a time."""
    items, next_cursor = service.list_deals(
        session,
        principal.workspace_id,
        pipeline_id=pipeline_id,
        stage_id=stage_id,
        owner_id=owner_id,
        contact_id=contact_id,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return DealPage(items=[DealRead.model_validate(d) for d in items], next_cursor=next_cursor)


@router.get("/deals/{deal_id}", response_model=DealRead)
def read_deal(deal_id: int, principal: Reader, session: ReadSession) -> DealRead:
    """One deal."""
    return DealRead.model_validate(service.get_deal(session, principal.workspace_id, deal_id))


@router.patch("/deals/{deal_id}", response_model=DealRead)
def update_deal(deal_id: int, data: DealUpdate, principal: Writer, session: DbSession) -> DealRead:
    """Change a deal; ``version`` must be the one last read (409 ``version_conflict`` otherwise)."""
    return DealRead.model_validate(service.update_deal(session, principal.workspace_id, deal_id, data))


@router.delete("/deals/{deal_id}", status_code=http.HTTP_204_NO_CONTENT)
def delete_deal(deal_id: int, principal: Writer, session: DbSession) -> Response:
    """Remove a deal with its history, objections, tasks and activities."""
    service.delete_deal(session, principal.workspace_id, deal_id)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.post("/deals/{deal_id}/move", response_model=DealRead)
def move_deal(deal_id: int, data: DealMove, principal: Writer, session: DbSession) -> DealRead:
    """Move a deal to another stage of its pipeline. Won records an order (the contact becomes a customer);
    lost needs ``lost_reason`` and returns the contact to 'consideration'."""
    deal = service.move_deal(session, principal.workspace_id, deal_id, data, actor=actor_of(session, principal))
    return DealRead.model_validate(deal)


@router.get("/deals/{deal_id}/history", response_model=list[StageChangeRead])
def deal_history(deal_id: int, principal: Reader, session: ReadSession) -> list[StageChangeRead]:
    """The deal's stage changes, oldest first (the first is its opening)."""
    return [StageChangeRead.model_validate(c) for c in service.stage_history(session, principal.workspace_id, deal_id)]


@router.get("/deals/{deal_id}/contacts", response_model=list[DealContactRead])
def list_deal_contacts(deal_id: int, principal: Reader, session: ReadSession) -> list[DealContactRead]:
    """The deal's buying group: its primary contact first, then the others with their roles."""
    return service.deal_contacts(session, principal.workspace_id, deal_id)


@router.post("/deals/{deal_id}/contacts", response_model=list[DealContactRead], status_code=http.HTTP_201_CREATED)
def add_deal_contact(deal_id: int, data: DealContactIn, principal: Writer, session: DbSession) -> list[DealContactRead]:
    """Add a contact to the deal (again: change its role); answers the whole group."""
    service.add_deal_contact(session, principal.workspace_id, deal_id, data)
    return service.deal_contacts(session, principal.workspace_id, deal_id)


@router.delete("/deals/{deal_id}/contacts/{contact_id}", status_code=http.HTTP_204_NO_CONTENT)
def remove_deal_contact(deal_id: int, contact_id: int, principal: Writer, session: DbSession) -> Response:
    """Take a further contact off the deal (the primary contact is changed with PATCH /deals/{id})."""
    service.remove_deal_contact(session, principal.workspace_id, deal_id, contact_id)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.post("/deals/{deal_id}/objections", response_model=ObjectionRead, status_code=http.HTTP_201_CREATED)
def add_objection(deal_id: int, data: ObjectionCreate, principal: Writer, session: DbSession) -> ObjectionRead:
    """Log an objection (and its answer) on a deal."""
    return ObjectionRead.model_validate(service.add_objection(session, principal.workspace_id, deal_id, data))


@router.get("/deals/{deal_id}/objections", response_model=list[ObjectionRead])
def list_objections(deal_id: int, principal: Reader, session: ReadSession) -> list[ObjectionRead]:
    """A deal's objections, oldest first."""
    return [ObjectionRead.model_validate(o) for o in service.list_objections(session, principal.workspace_id, deal_id)]


# --- tasks ----------------------------------------------------------------------------------------------------------


@router.post("/tasks", response_model=TaskRead, status_code=http.HTTP_201_CREATED)
def create_task(data: TaskCreate, principal: Writer, session: DbSession) -> TaskRead:
    """A follow-up task; a due time in the past is refused (422 ``due_in_past``)."""
    return TaskRead.model_validate(service.create_task(session, principal.workspace_id, data))


@router.get("/tasks", response_model=list[TaskRead])
def list_tasks(
    principal: Reader,
    session: ReadSession,
    owner_id: int | None = None,
    deal_id: int | None = None,
    overdue: bool = False,
    done: bool | None = None,
    handoff: bool | None = None,
    limit: Limit = 200,
) -> list[TaskRead]:
    """Tasks by due time; ``overdue=true``: open tasks due before now; ``handoff=true``: only hand-off tasks."""
    tasks = service.list_tasks(
        session,
        principal.workspace_id,
        owner_id=owner_id,
        deal_id=deal_id,
        overdue=overdue,
        done=done,
        handoff=handoff,
        limit=limit,
    )
    return [TaskRead.model_validate(t) for t in tasks]


@router.get("/tasks/{task_id}", response_model=TaskRead)
def read_task(task_id: int, principal: Reader, session: ReadSession) -> TaskRead:
    """One task."""
    return TaskRead.model_validate(service.get_task(session, principal.workspace_id, task_id))


@router.patch("/tasks/{task_id}", response_model=TaskRead)
def update_task(task_id: int, data: TaskUpdate, principal: Writer, session: DbSession) -> TaskRead:
    """Change a task."""
    return TaskRead.model_validate(service.update_task(session, principal.workspace_id, task_id, data))


@router.post("/tasks/{task_id}/complete", response_model=TaskRead)
def complete_task(task_id: int, principal: Writer, session: DbSession) -> TaskRead:
    """Mark a task done."""
    return TaskRead.model_validate(service.complete_task(session, principal.workspace_id, task_id))


@router.delete("/tasks/{task_id}", status_code=http.HTTP_204_NO_CONTENT)
def delete_task(task_id: int, principal: Writer, session: DbSession) -> Response:
    """Remove a task."""
    service.delete_task(session, principal.workspace_id, task_id)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


# --- activities -----------------------------------------------------------------------------------------------------


@router.post("/activities", response_model=ActivityRead, status_code=http.HTTP_201_CREATED)
def create_activity(data: ActivityCreate, principal: Writer, session: DbSession) -> ActivityRead:
    """Log a call, meeting, email or note on a deal and/or a contact."""
    return ActivityRead.model_validate(service.create_activity(session, principal.workspace_id, data))


@router.get("/activities", response_model=list[ActivityRead])
def list_activities(
    principal: Reader,
    session: ReadSession,
    deal_id: int | None = None,
    contact_id: int | None = None,
    limit: Limit = 200,
) -> list[ActivityRead]:
    """Activities, newest first."""
    rows = service.list_activities(session, principal.workspace_id, deal_id=deal_id, contact_id=contact_id, limit=limit)
    return [ActivityRead.model_validate(a) for a in rows]


# --- forecast -------------------------------------------------------------------------------------------------------


def _parse_rates(raw: list[str]) -> dict[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for i, item in enumerate(raw):
        code, sep, value = item.partition(":")
        code = code.strip().upper()
        try:
            rate = Decimal(value.strip())
        except InvalidOperation:
            rate = Decimal(0)
        if not sep or not is_currency(code) or not rate.is_finite() or rate <= 0:
            raise DomainError(f"rate.{i}", f"{item!r} is not CODE:RATE (e.g. USD:0.92)", code="invalid_rate")
        rates[code] = rate
    return rates


@router.get("/forecast", response_model=ForecastRead)
def forecast(
    principal: Reader,
    session: ReadSession,
    group_by: GroupBy = "month",
    currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    pipeline_id: int | None = None,
    stalls_by: Annotated[
        StallGroupBy | None,
        Query(description="Split the stalled deals per owner, team or territory (country or region)"),
    ] = None,
    rate: Annotated[
        list[str], Query(description="CODE:RATE, one major unit of CODE in the forecast currency; repeatable")
    ] = [],  # noqa: B006
) -> ForecastRead:
    """Weighted pipeline (amount × stage probability), commit (probability ≥ 80) and best case of open deals,
    grouped by expected-close month, owner, stage, team (the owner's first team by name), country (the company's,
    else the contact's) or region (the contact's), plus average days per stage, conversion per stage and where
    deals stall (per stage; with ``stalls_by`` also per owner, team, country or region, and their totals).
    Without ``rate`` the workspace's exchange-rate table gives today's rates. Deals in a currency without a rate
    are reported in their own currency, never summed across currencies."""
    if currency is not None and not is_currency(currency.upper()):
        raise DomainError("currency", f"{currency!r} is not a known ISO 4217 currency code", code="invalid_currency")
    if pipeline_id is not None:
        service.get_pipeline(session, principal.workspace_id, pipeline_id)
    return deals_forecast.workspace_forecast(
        session,
        principal.workspace_id,
        group_by=group_by,
        currency=currency.upper() if currency else None,
        rates=_parse_rates(rate),
        pipeline_id=pipeline_id,
        stalls_by=stalls_by,
    )


# --- proposals ------------------------------------------------------------------------------------------------------


@router.post("/deals/{deal_id}/proposals", response_model=ProposalRead, status_code=http.HTTP_201_CREATED)
def create_proposal(deal_id: int, data: ProposalCreate, principal: Writer, session: DbSession) -> ProposalRead:
    """A draft proposal with catalogue lines; totals are computed here, in the proposal's currency only."""
    proposal = proposals.create_proposal(session, principal.workspace_id, deal_id, data)
    return proposals.read(session, proposal)


@router.get("/deals/{deal_id}/proposals", response_model=list[ProposalRead])
def list_proposals(deal_id: int, principal: Reader, session: ReadSession) -> list[ProposalRead]:
    """The proposals of a deal."""
    return [proposals.read(session, p) for p in proposals.list_proposals(session, principal.workspace_id, deal_id)]


@router.get("/proposals/{proposal_id}", response_model=ProposalRead)
def get_proposal(proposal_id: int, principal: Reader, session: ReadSession) -> ProposalRead:
    """One proposal with its lines."""
    return proposals.read(session, proposals.get_proposal(session, principal.workspace_id, proposal_id))


@router.patch("/proposals/{proposal_id}", response_model=ProposalRead)
def update_proposal(proposal_id: int, data: ProposalUpdate, principal: Writer, session: DbSession) -> ProposalRead:
    """Change an open proposal; totals are recomputed."""
    return proposals.read(session, proposals.update_proposal(session, principal.workspace_id, proposal_id, data))


@router.post("/proposals/{proposal_id}/accept", response_model=ProposalRead)
def accept_proposal(proposal_id: int, principal: Writer, session: DbSession) -> ProposalRead:
    """Accept a proposal: the deal's amount becomes its total."""
    return proposals.read(session, proposals.accept_proposal(session, principal.workspace_id, proposal_id))


@router.post("/proposals/{proposal_id}/reject", response_model=ProposalRead)
def reject_proposal(proposal_id: int, principal: Writer, session: DbSession) -> ProposalRead:
    """Reject a proposal."""
    return proposals.read(session, proposals.reject_proposal(session, principal.workspace_id, proposal_id))


# --- assignment and hand-offs ---------------------------------------------------------------------------------------


def _team_read(session: Session, workspace_id: int, team: SalesTeam) -> TeamRead:
    members = assignment.team_members(session, workspace_id, [team.id])[team.id]
    return TeamRead(
        id=team.id, name=team.name, members=[TeamMemberRead(user_id=m.user_id, active=m.active) for m in members]
    )


@router.get("/sales/teams", response_model=list[TeamRead])
def list_teams(principal: Reader, session: ReadSession) -> list[TeamRead]:
    """Sales teams with their members."""
    return [
        _team_read(session, principal.workspace_id, t) for t in assignment.list_teams(session, principal.workspace_id)
    ]


@router.post("/sales/teams", response_model=TeamRead, status_code=http.HTTP_201_CREATED)
def create_team(data: TeamIn, principal: Admin, session: DbSession) -> TeamRead:
    """A team of workspace members (round-robin and load-balanced rules distribute among its active members)."""
    return _team_read(session, principal.workspace_id, assignment.create_team(session, principal.workspace_id, data))


@router.put("/sales/teams/{team_id}", response_model=TeamRead)
def update_team(team_id: int, data: TeamIn, principal: Admin, session: DbSession) -> TeamRead:
    """Rename a team and replace its members."""
    team = assignment.update_team(session, principal.workspace_id, team_id, data)
    return _team_read(session, principal.workspace_id, team)


@router.delete("/sales/teams/{team_id}", status_code=http.HTTP_204_NO_CONTENT)
def delete_team(team_id: int, principal: Admin, session: DbSession) -> Response:
    """Remove a team no rule names."""
    assignment.delete_team(session, principal.workspace_id, team_id)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.get("/sales/assignment-rules", response_model=list[AssignmentRuleRead])
def list_assignment_rules(principal: Reader, session: ReadSession) -> list[AssignmentRuleRead]:
    """The owner-assignment rules in order (the first matching active rule wins)."""
    return [AssignmentRuleRead.model_validate(r) for r in assignment.list_rules(session, principal.workspace_id)]


@router.put("/sales/assignment-rules", response_model=list[AssignmentRuleRead])
def put_assignment_rules(data: AssignmentRulesIn, principal: Admin, session: DbSession) -> list[AssignmentRuleRead]:
    """Replace the rules; errors name the field (``rules.2.conditions.country.0``)."""
    rows = assignment.replace_rules(session, principal.workspace_id, data.rules)
    return [AssignmentRuleRead.model_validate(r) for r in rows]


@router.get("/sales/settings", response_model=SalesSettingsRead)
def read_sales_settings(principal: Reader, session: DbSession) -> SalesSettingsRead:
    """Hand-off settings: trigger stage, response target in working hours, workspace working hours."""
    return SalesSettingsRead.model_validate(assignment.get_settings(session, principal.workspace_id))


@router.put("/sales/settings", response_model=SalesSettingsRead)
def put_sales_settings(data: SalesSettingsIn, principal: Admin, session: DbSession) -> SalesSettingsRead:
    """Store the hand-off settings."""
    return SalesSettingsRead.model_validate(assignment.put_settings(session, principal.workspace_id, data))


@router.put("/sales/working-hours/{user_id}")
def put_user_working_hours(
    user_id: int, data: WorkingHoursIn, principal: Admin, session: DbSession
) -> dict[str, object]:
    """A user's own working hours (an empty object removes them); answers the schedule that now applies."""
    return assignment.set_user_working_hours(session, principal.workspace_id, user_id, data.working_hours)


@router.get("/sales/working-hours/{user_id}")
def read_user_working_hours(user_id: int, principal: Reader, session: DbSession) -> dict[str, object]:
    """The working hours that apply to a user (their own, the workspace's or the default)."""
    return assignment.schedule_for(session, principal.workspace_id, user_id).as_dict()


@router.post("/sales/assign", response_model=AssignmentRead)
def assign_owner(data: AssignRequest, principal: Writer, session: DbSession) -> AssignmentRead:
    """Assign an owner by the rules to a contact or a deal (``force``: even if it has one; ``dry_run``: only say
    who). 404 ``no_rule`` when no rule matches."""
    from suppilo.contacts import service as contacts_service

    if (data.contact_id is None) == (data.deal_id is None):
        raise DomainError("contact_id", "give contact_id or deal_id", code="missing_subject")
    ws = principal.workspace_id
    actor = actor_of(session, principal)
    if data.contact_id is not None:
        contact = contacts_service.get_contact(session, ws, data.contact_id)
        subject_type, subject_id, owner = "contact", contact.id, contact.owner_id
        facts = assignment._facts(session, ws, contact, None)
    else:
        deal = service.get_deal(session, ws, data.deal_id or 0, lock=True)
        subject_type, subject_id, owner = "deal", deal.id, deal.owner_id
        facts = assignment._facts(session, ws, service._contact(session, deal), deal.company_id)
    if owner is not None and not data.force:
        raise Conflict("owner_id", f"the {subject_type} has an owner (user {owner}); send force to reassign", "owned")
    if data.dry_run:
        choice = assignment.choose_owner(session, ws, facts, dry_run=True)
        if choice is None:
            raise NotFound("rules", "no assignment rule matches", code="no_rule")
        return AssignmentRead(
            subject_type=subject_type,
            subject_id=subject_id,
            user_id=choice.user_id,
            rule_id=choice.rule.id,
            rule_name=choice.rule.name,
            team_id=choice.rule.team_id,
            distribution=choice.rule.distribution,
            trigger="dry_run",
        )
    if data.contact_id is not None:
        row = assignment.assign_contact(session, ws, contact, trigger="api", actor=actor, force=True)
    else:
        row = assignment.assign_deal(session, ws, deal, trigger="api", actor=actor, force=True)
    if row is None:
        raise NotFound("rules", "no assignment rule matches", code="no_rule")
    return AssignmentRead.model_validate(row)


@router.get("/sales/assignments", response_model=list[AssignmentRead])
def list_assignments(
    principal: Reader,
    session: ReadSession,
    subject_type: Annotated[str | None, Query(pattern="^(contact|deal)$")] = None,
    subject_id: int | None = None,
) -> list[AssignmentRead]:
    """The assignment log (who got what, by which rule), newest first."""
    rows = assignment.list_assignments(
        session, principal.workspace_id, subject_type=subject_type, subject_id=subject_id
    )
    return [AssignmentRead.model_validate(r) for r in rows]


@router.get("/sales/handoffs", response_model=list[HandoffRead])
def list_handoffs(
    principal: Reader,
    session: ReadSession,
    status: Annotated[str | None, Query(pattern="^(open|overdue|met|late)$")] = None,
    owner_id: int | None = None,
    limit: Limit = 200,
) -> list[HandoffRead]:
    """Hand-off tasks with their response status (open, overdue, met, late) and measured response time."""
    rows = assignment.list_handoffs(session, principal.workspace_id, status=status, owner_id=owner_id, limit=limit)
    return [
        HandoffRead(
            task=TaskRead.model_validate(task),
            status=state,
            response_seconds=None if elapsed is None else int(elapsed.total_seconds()),
            response_working_seconds=None if working is None else int(working.total_seconds()),
        )
        for task, state, elapsed, working in rows
    ]
