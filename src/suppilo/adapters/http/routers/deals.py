"""HTTP routes: sales pipeline — pipelines and boards, deals with moves and objections, tasks, activities,
forecast."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http
from sqlalchemy.orm import Session

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer
from suppilo.adapters.http.routers.contacts import actor_of
from suppilo.commerce.money import is_currency
from suppilo.deals import forecast as deals_forecast
from suppilo.deals import proposals, service
from suppilo.deals.models import Pipeline
from suppilo.deals.schemas import (
    ActivityCreate,
    ActivityRead,
    Board,
    BoardColumn,
    BoardMoney,
    DealCreate,
    DealMove,
    DealPage,
    DealRead,
    DealStatus,
    DealUpdate,
    ForecastRead,
    GroupBy,
    ObjectionCreate,
    ObjectionRead,
    PipelineCreate,
    PipelineRead,
    PipelineUpdate,
    ProposalCreate,
    ProposalRead,
    ProposalUpdate,
    StageChangeRead,
    StageRead,
    TaskCreate,
    TaskRead,
    TaskUpdate,
)
from suppilo.errors import DomainError

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
) -> Board:
    """Per stage: the number of deals, the amounts summed per currency and the newest ``per_stage`` deals."""
    columns = service.board(session, principal.workspace_id, pipeline_id, per_stage=per_stage)
    return Board(
        pipeline_id=pipeline_id,
        columns=[
            BoardColumn(
                stage=StageRead.model_validate(stage),
                count=count,
                sums=[BoardMoney(currency=c, amount_minor=a) for c, a in sums],
                deals=[DealRead.model_validate(d) for d in deals],
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
    limit: Limit = 200,
) -> list[TaskRead]:
    """Tasks by due time; ``overdue=true``: open tasks due before now."""
    tasks = service.list_tasks(
        session, principal.workspace_id, owner_id=owner_id, deal_id=deal_id, overdue=overdue, done=done, limit=limit
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
    rate: Annotated[
        list[str], Query(description="CODE:RATE, one major unit of CODE in the forecast currency; repeatable")
    ] = [],  # noqa: B006
) -> ForecastRead:
    """Weighted pipeline (amount × stage probability), commit (probability ≥ 80) and best case of open deals,
    grouped by expected-close month, owner or stage, plus average days per stage and conversion per stage.
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
