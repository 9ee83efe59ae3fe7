"""Sales pipeline use cases: pipelines, deals and their moves, objections, tasks, activities.

Services flush, never commit. Every query filters on the workspace; a foreign id answers NotFound.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suppilo.commerce import service as commerce_service
from suppilo.commerce.schemas import OrderCreate
from suppilo.companies import service as companies_service
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact
from suppilo.contacts.schemas import check_limit, decode_cursor, encode_cursor
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.deals.models import (
    Activity,
    Deal,
    DealContact,
    DealObjection,
    DealStageChange,
    Pipeline,
    PipelineStage,
    Task,
)
from suppilo.deals.schemas import (
    ActivityCreate,
    DealContactIn,
    DealContactRead,
    DealCreate,
    DealMove,
    DealUpdate,
    ObjectionCreate,
    PipelineCreate,
    PipelineUpdate,
    StageIn,
    TaskCreate,
    TaskUpdate,
)
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.workspaces.models import Membership
from suppilo.workspaces.service import get_workspace

DEFAULT_PIPELINE_NAME = "Sales"
DEFAULT_STAGES: tuple[tuple[str, str, int, str], ...] = (
    ("qualification", "Qualification", 10, "open"),
    ("discovery_call", "Discovery call", 20, "open"),
    ("demo", "Demo", 40, "open"),
    ("proposal", "Proposal", 60, "open"),
    ("negotiation", "Negotiation", 80, "open"),
    ("won", "Won", 100, "won"),
    ("lost", "Lost", 0, "lost"),
)


class DealError(DomainError):
    """A refused pipeline, deal or task operation."""


# --- pipelines ------------------------------------------------------------------------------------------------------


def _check_stage_set(stages: list[StageIn], path: str = "stages") -> None:
    keys = [s.key for s in stages]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise DealError(f"{path}.{i}.key", f"stage key {key!r} appears twice", code="duplicate_stage")
    kinds = {s.kind for s in stages}
    for kind in ("open", "won", "lost"):
        if kind not in kinds:
            raise DealError(path, f"a pipeline needs at least one {kind!r} stage", code="invalid_stages")
    for i, stage in enumerate(stages):
        if stage.kind == "won" and stage.probability != 100:
            raise DealError(f"{path}.{i}.probability", "a won stage has probability 100", code="invalid_stages")
        if stage.kind == "lost" and stage.probability != 0:
            raise DealError(f"{path}.{i}.probability", "a lost stage has probability 0", code="invalid_stages")


def _unset_other_defaults(session: Session, workspace_id: int, pipeline_id: int) -> None:
    session.execute(
        update(Pipeline)
        .where(Pipeline.workspace_id == workspace_id, Pipeline.id != pipeline_id, Pipeline.is_default.is_(True))
        .values(is_default=False)
        .execution_options(synchronize_session="fetch")
    )


def _check_name_free(session: Session, workspace_id: int, name: str, pipeline_id: int | None) -> None:
    query = select(Pipeline.id).where(Pipeline.workspace_id == workspace_id, Pipeline.name == name)
    if pipeline_id is not None:
        query = query.where(Pipeline.id != pipeline_id)
    if session.scalar(query) is not None:
        raise Conflict("name", f"a pipeline named {name!r} exists", code="duplicate_name")


def ensure_default_pipeline(session: Session, workspace_id: int) -> Pipeline:
    """The workspace's default pipeline, created with the standard stages when the workspace has none."""
    pipeline = session.scalar(
        select(Pipeline).where(Pipeline.workspace_id == workspace_id).order_by(Pipeline.is_default.desc(), Pipeline.id)
    )
    if pipeline is not None:
        return pipeline
    pipeline = Pipeline(
        workspace_id=workspace_id, name=DEFAULT_PIPELINE_NAME, requires_amount_to_win=True, is_default=True
    )
    try:
        with session.begin_nested():
            session.add(pipeline)
            session.flush()
    except IntegrityError:
        # A concurrent first request created it (the name is unique per workspace): use that one.
        return session.scalars(
            select(Pipeline).where(Pipeline.workspace_id == workspace_id, Pipeline.name == DEFAULT_PIPELINE_NAME)
        ).one()
    for position, (key, label, probability, kind) in enumerate(DEFAULT_STAGES, start=1):
        session.add(
            PipelineStage(
                workspace_id=workspace_id,
                pipeline_id=pipeline.id,
                key=key,
                label=label,
                position=position * 10,
                probability=probability,
                kind=kind,
            )
        )
    session.flush()
    return pipeline


def create_pipeline(session: Session, workspace_id: int, data: PipelineCreate) -> Pipeline:
    """A new pipeline with its stages."""
    _check_stage_set(data.stages)
    _check_name_free(session, workspace_id, data.name, None)
    pipeline = Pipeline(
        workspace_id=workspace_id,
        name=data.name,
        requires_amount_to_win=data.requires_amount_to_win,
        is_default=data.is_default,
    )
    session.add(pipeline)
    session.flush()
    for position, stage in enumerate(data.stages, start=1):
        session.add(
            PipelineStage(
                workspace_id=workspace_id,
                pipeline_id=pipeline.id,
                key=stage.key,
                label=stage.label,
                position=position * 10,
                probability=stage.probability,
                kind=stage.kind,
            )
        )
    if data.is_default:
        _unset_other_defaults(session, workspace_id, pipeline.id)
    session.flush()
    return pipeline


def get_pipeline(session: Session, workspace_id: int, pipeline_id: int, path: str = "pipeline_id") -> Pipeline:
    """A pipeline of this workspace; NotFound otherwise."""
    pipeline = session.scalar(select(Pipeline).where(Pipeline.workspace_id == workspace_id, Pipeline.id == pipeline_id))
    if pipeline is None:
        raise NotFound(path, f"pipeline {pipeline_id} not found")
    return pipeline


def list_pipelines(session: Session, workspace_id: int) -> list[Pipeline]:
    """The workspace's pipelines (the default one is created on first use), default first."""
    ensure_default_pipeline(session, workspace_id)
    return list(
        session.scalars(
            select(Pipeline)
            .where(Pipeline.workspace_id == workspace_id)
            .order_by(Pipeline.is_default.desc(), Pipeline.id)
        )
    )


def pipeline_stages(session: Session, workspace_id: int, pipeline_ids: list[int]) -> dict[int, list[PipelineStage]]:
    """The stages of these pipelines in order, by pipeline id."""
    out: dict[int, list[PipelineStage]] = {pid: [] for pid in pipeline_ids}
    if not pipeline_ids:
        return out
    rows = session.scalars(
        select(PipelineStage)
        .where(PipelineStage.workspace_id == workspace_id, PipelineStage.pipeline_id.in_(pipeline_ids))
        .order_by(PipelineStage.pipeline_id, PipelineStage.position)
    )
    for row in rows:
        out[row.pipeline_id].append(row)
    return out


def update_pipeline(session: Session, workspace_id: int, pipeline_id: int, data: PipelineUpdate) -> Pipeline:
    """Rename, flag or restage a pipeline. Stages are matched by key: kept ones keep their id (and deals);
    a dropped stage that still holds deals is refused."""
    pipeline = get_pipeline(session, workspace_id, pipeline_id)
    if data.name is not None and data.name != pipeline.name:
        _check_name_free(session, workspace_id, data.name, pipeline.id)
        pipeline.name = data.name
    if data.requires_amount_to_win is not None:
        pipeline.requires_amount_to_win = data.requires_amount_to_win
    if data.is_default is not None:
        if data.is_default:
            _unset_other_defaults(session, workspace_id, pipeline.id)
        pipeline.is_default = data.is_default
    if data.stages is not None:
        _check_stage_set(data.stages)
        current = {s.key: s for s in pipeline_stages(session, workspace_id, [pipeline.id])[pipeline.id]}
        wanted = {s.key for s in data.stages}
        for key, stage in current.items():
            if key in wanted:
                continue
            used = session.scalar(
                select(func.count())
                .select_from(Deal)
                .where(Deal.workspace_id == workspace_id, Deal.stage_id == stage.id)
            )
            if used:
                raise Conflict("stages", f"stage {key!r} still holds {used} deal(s); move them first", "stage_in_use")
            passed = session.scalar(
                select(func.count(func.distinct(DealStageChange.deal_id))).where(
                    DealStageChange.workspace_id == workspace_id,
                    (DealStageChange.to_stage_id == stage.id) | (DealStageChange.from_stage_id == stage.id),
                )
            )
            if passed:
                raise Conflict(
                    "stages",
                    f"stage {key!r} is in the history of {passed} deal(s); keep it (rename it or move it last)",
                    "stage_in_use",
                )
        for key, stage in current.items():
            if key not in wanted:
                session.delete(stage)
        for position, spec in enumerate(data.stages, start=1):
            row = current.get(spec.key)
            if row is None:
                row = PipelineStage(workspace_id=workspace_id, pipeline_id=pipeline.id, key=spec.key)
                session.add(row)
            row.label = spec.label
            row.position = position * 10
            row.probability = spec.probability
            row.kind = spec.kind
    session.flush()
    return pipeline


def delete_pipeline(session: Session, workspace_id: int, pipeline_id: int) -> None:
    """Remove a pipeline without deals."""
    pipeline = get_pipeline(session, workspace_id, pipeline_id)
    used = session.scalar(
        select(func.count()).select_from(Deal).where(Deal.workspace_id == workspace_id, Deal.pipeline_id == pipeline.id)
    )
    if used:
        raise Conflict("pipeline_id", f"pipeline {pipeline_id} holds {used} deal(s)", code="pipeline_in_use")
    session.delete(pipeline)
    session.flush()


def _stage(session: Session, workspace_id: int, stage_id: int, path: str = "stage_id") -> PipelineStage:
    stage = session.scalar(
        select(PipelineStage).where(PipelineStage.workspace_id == workspace_id, PipelineStage.id == stage_id)
    )
    if stage is None:
        raise NotFound(path, f"stage {stage_id} not found")
    return stage


# --- deals ----------------------------------------------------------------------------------------------------------


def _check_owner(session: Session, workspace_id: int, owner_id: int, path: str = "owner_id") -> None:
    found = session.scalar(
        select(Membership.id).where(Membership.workspace_id == workspace_id, Membership.user_id == owner_id)
    )
    if found is None:
        raise DealError(path, f"user {owner_id} is not a member of this workspace", code="invalid_owner")


def _check_links(session: Session, workspace_id: int, fields: dict[str, Any]) -> None:
    if fields.get("contact_id") is not None:
        fields["contact_id"] = contacts_service.get_contact(session, workspace_id, fields["contact_id"]).id
    if fields.get("company_id") is not None:
        companies_service.get_company(session, workspace_id, fields["company_id"])
    if fields.get("owner_id") is not None:
        _check_owner(session, workspace_id, fields["owner_id"])
    if fields.get("budget_minor") is not None and not fields.get("budget_currency"):
        raise DealError("budget_currency", "a budget needs its currency", code="missing_currency")


def _record_change(
    session: Session,
    deal: Deal,
    from_stage_id: int | None,
    to_stage_id: int,
    at: datetime,
    actor: str | None,
    reason: str,
) -> DealStageChange:
    change = DealStageChange(
        workspace_id=deal.workspace_id,
        deal_id=deal.id,
        from_stage_id=from_stage_id,
        to_stage_id=to_stage_id,
        changed_at=at,
        actor=actor,
        reason=reason[:500],
    )
    session.add(change)
    return change


def _contact(session: Session, deal: Deal) -> Contact | None:
    if deal.contact_id is None:
        return None
    return session.scalar(
        select(Contact).where(Contact.workspace_id == deal.workspace_id, Contact.id == deal.contact_id)
    )


def create_deal(session: Session, workspace_id: int, data: DealCreate, *, actor: str | None = None) -> Deal:
    """Open a deal in a pipeline's open stage; its contact moves to 'decision' (rule ``deal_opened``)."""
    workspace = get_workspace(session, workspace_id)
    if data.pipeline_id is None:
        pipeline = list_pipelines(session, workspace_id)[0]
    else:
        pipeline = get_pipeline(session, workspace_id, data.pipeline_id)
    stages = pipeline_stages(session, workspace_id, [pipeline.id])[pipeline.id]
    if data.stage_id is None:
        stage = next(s for s in stages if s.kind == "open")
    else:
        stage = _stage(session, workspace_id, data.stage_id)
        if stage.pipeline_id != pipeline.id:
            raise DealError(
                "stage_id", f"stage {stage.id} belongs to another pipeline than {pipeline.id}", "stage_not_in_pipeline"
            )
        if stage.kind != "open":
            raise DealError("stage_id", "a deal opens in an open stage; move it to won or lost after", "stage_closed")
    fields = data.model_dump(exclude={"pipeline_id", "stage_id"})
    _check_links(session, workspace_id, fields)
    fields["currency"] = fields["currency"] or workspace.currency
    now = utcnow()
    deal = Deal(
        workspace_id=workspace_id,
        pipeline_id=pipeline.id,
        stage_id=stage.id,
        status="open",
        stage_entered_at=now,
        version=1,
        **fields,
    )
    session.add(deal)
    session.flush()
    _record_change(session, deal, None, stage.id, now, actor, "opened")
    if deal.owner_id is None:
        _assign_new_deal(session, deal, actor, now)
    _apply_deal_opened(session, deal, now)
    return deal


def _assign_new_deal(session: Session, deal: Deal, actor: str | None, now: datetime) -> None:
    """A deal opened without an owner takes its contact's owner, else one from the assignment rules (with a
    first-contact hand-off task)."""
    from suppilo.deals import assignment

    contact = _contact(session, deal)
    if contact is not None and contact.owner_id is not None:
        deal.owner_id = contact.owner_id
        session.flush()
        return
    assignment.assign_deal(session, deal.workspace_id, deal, trigger="deal_created", actor=actor or "system", now=now)


def _apply_deal_opened(session: Session, deal: Deal, at: datetime) -> None:
    """Move the deal's contact forward to 'decision' (the workspace's ``deal_opened`` rule)."""
    contact = _contact(session, deal)
    if contact is None:
        return
    workspace = get_workspace(session, deal.workspace_id)
    contacts_service.apply_rule(
        session,
        contact,
        "deal_opened",
        rules=contacts_service.lifecycle_rules(workspace.settings),
        stages=contacts_service.stage_specs(session, deal.workspace_id),
        at=at,
        detail=f"deal {deal.id} ({deal.name})",
    )
    session.flush()


def get_deal(session: Session, workspace_id: int, deal_id: int, path: str = "deal_id", *, lock: bool = False) -> Deal:
    """A deal of this workspace; NotFound otherwise. ``lock``: hold its row until commit (PostgreSQL), so
    concurrent changes of one deal run one after the other."""
    query = select(Deal).where(Deal.workspace_id == workspace_id, Deal.id == deal_id)
    if lock:
        query = query.with_for_update()
    deal = session.scalar(query)
    if deal is None:
        raise NotFound(path, f"deal {deal_id} not found")
    return deal


def list_deals(
    session: Session,
    workspace_id: int,
    *,
    pipeline_id: int | None = None,
    stage_id: int | None = None,
    owner_id: int | None = None,
    status: str | None = None,
    contact_id: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Deal], str | None]:
    """A page of deals, newest first."""
    limit = check_limit(limit)
    before = decode_cursor(cursor)
    query = select(Deal).where(Deal.workspace_id == workspace_id)
    if pipeline_id is not None:
        query = query.where(Deal.pipeline_id == pipeline_id)
    if stage_id is not None:
        query = query.where(Deal.stage_id == stage_id)
    if owner_id is not None:
        query = query.where(Deal.owner_id == owner_id)
    if status is not None:
        query = query.where(Deal.status == status)
    if contact_id is not None:
        query = query.where(Deal.contact_id == contact_id)
    if before is not None:
        query = query.where(Deal.id < before)
    rows = list(session.scalars(query.order_by(Deal.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _claim_version(session: Session, deal: Deal, expected: int | None) -> None:
    """Bump the deal's version; with ``expected`` only if it is still that (else 409 version_conflict)."""
    if expected is None:
        deal.version += 1
        return
    result = session.execute(
        update(Deal)
        .where(Deal.workspace_id == deal.workspace_id, Deal.id == deal.id, Deal.version == expected)
        .values(version=expected + 1)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        session.refresh(deal, ["version"])
        raise Conflict(
            "version",
            f"the deal was changed meanwhile (version {deal.version}, you sent {expected}); reload it",
            code="version_conflict",
        )
    deal.version = expected + 1


def update_deal(session: Session, workspace_id: int, deal_id: int, data: DealUpdate) -> Deal:
    """Change a deal's fields if ``data.version`` is still current (409 version_conflict otherwise)."""
    deal = get_deal(session, workspace_id, deal_id, lock=True)
    fields = data.model_dump(exclude_unset=True, exclude={"version"})
    if "name" in fields and fields["name"] is None:
        raise DealError("name", "a deal needs a name")
    if "currency" in fields and fields["currency"] is None:
        raise DealError("currency", "a deal needs a currency")
    check = dict(fields)
    if "budget_minor" in check and "budget_currency" not in check:
        check["budget_currency"] = deal.budget_currency
    _check_links(session, workspace_id, check)
    if "contact_id" in fields:
        fields["contact_id"] = check["contact_id"]
    if deal.status == "won" and ({"amount_minor", "currency"} & fields.keys()):
        raise DealError("amount_minor", "a won deal's amount is recorded in its order", code="deal_closed")
    _claim_version(session, deal, data.version)
    for key, value in fields.items():
        setattr(deal, key, value)
    session.flush()
    return deal


def move_deal(session: Session, workspace_id: int, deal_id: int, data: DealMove, *, actor: str | None = None) -> Deal:
    """Move a deal to another stage of its pipeline, recording the move.

    Refused: a stage of another pipeline; won without an amount when the pipeline requires one; lost without
    a reason; any move of a won deal. Won records an order through commerce (the contact becomes a customer);
    lost returns the contact to 'consideration' with the reason; reopening a lost deal applies ``deal_opened``.
    """
    deal = get_deal(session, workspace_id, deal_id, lock=True)
    target = _stage(session, workspace_id, data.stage_id)
    if target.pipeline_id != deal.pipeline_id:
        raise DealError(
            "stage_id",
            f"stage {target.id} belongs to pipeline {target.pipeline_id}, "
            f"not to the deal's pipeline {deal.pipeline_id}",
            code="stage_not_in_pipeline",
        )
    if deal.status == "won":
        raise DealError("stage_id", "the deal is won; a won deal does not move", code="deal_closed")
    if target.id == deal.stage_id:
        return deal
    pipeline = get_pipeline(session, workspace_id, deal.pipeline_id)
    reason = ""
    if target.kind == "won" and pipeline.requires_amount_to_win and not deal.amount_minor:
        raise DealError(
            "amount_minor", f"pipeline {pipeline.name!r} requires an amount to win a deal", code="amount_required"
        )
    if target.kind == "lost":
        reason = (data.lost_reason or "").strip()
        if not reason:
            raise DealError("lost_reason", "give the reason the deal was lost", code="lost_reason_required")
    _claim_version(session, deal, data.version)
    now = utcnow()
    from_stage_id = deal.stage_id
    reopened = deal.status == "lost" and target.kind == "open"
    deal.stage_id = target.id
    deal.stage_entered_at = now
    deal.status = target.kind
    if target.kind == "won":
        deal.won_at = now
        deal.lost_at = None
        deal.lost_reason = None
    elif target.kind == "lost":
        deal.lost_at = now
        deal.lost_reason = reason
    else:
        deal.lost_at = None
        deal.lost_reason = None
    _record_change(session, deal, from_stage_id, target.id, now, actor, reason)
    session.flush()
    if target.kind == "won":
        _record_won_order(session, deal, now)
    elif target.kind == "lost":
        _return_contact_to_nurturing(session, deal, reason, now, actor)
    elif reopened:
        _apply_deal_opened(session, deal, now)
    return deal


def _record_won_order(session: Session, deal: Deal, at: datetime) -> None:
    amount = deal.amount_minor or 0
    commerce_service.upsert_order(
        session,
        deal.workspace_id,
        OrderCreate(
            external_id=f"deal:{deal.id}",
            contact_id=deal.contact_id,
            placed_at=at,
            currency=deal.currency,
            subtotal_minor=amount,
            total_minor=amount,
            channel="sales",
            properties={"deal_id": deal.id, "deal_name": deal.name},
        ),
    )


def _return_contact_to_nurturing(session: Session, deal: Deal, reason: str, at: datetime, actor: str | None) -> None:
    contact = _contact(session, deal)
    if contact is None or contact.lifecycle_stage != "decision":
        return
    other_open = session.scalar(
        select(Deal.id).where(
            Deal.workspace_id == deal.workspace_id,
            Deal.contact_id == contact.id,
            Deal.status == "open",
            Deal.id != deal.id,
        )
    )
    if other_open is not None:
        return
    contacts_service.change_stage(
        session,
        contact,
        "consideration",
        reason=f"deal {deal.id} lost: {reason}",
        source="rule",
        actor=actor,
        at=at,
    )


def stage_history(session: Session, workspace_id: int, deal_id: int) -> list[DealStageChange]:
    """A deal's moves, oldest first."""
    get_deal(session, workspace_id, deal_id)
    return list(
        session.scalars(
            select(DealStageChange)
            .where(DealStageChange.workspace_id == workspace_id, DealStageChange.deal_id == deal_id)
            .order_by(DealStageChange.changed_at, DealStageChange.id)
        )
    )


def delete_deal(session: Session, workspace_id: int, deal_id: int) -> None:
    """Remove a deal with its history, objections, tasks and activities."""
    deal = get_deal(session, workspace_id, deal_id)
    session.delete(deal)
    session.flush()


def _overdue_deal_ids(workspace_id: int, now: datetime) -> Any:
    """Deals with an open task past its due time (a subquery)."""
    return select(Task.deal_id).where(
        Task.workspace_id == workspace_id, Task.deal_id.is_not(None), Task.done_at.is_(None), Task.due_at < now
    )


def overdue_tasks_per_stage(session: Session, workspace_id: int, pipeline_id: int) -> dict[int, int]:
    """Open tasks past their due time on the deals of each stage of a pipeline."""
    rows = session.execute(
        select(Deal.stage_id, func.count())
        .join(Task, (Task.workspace_id == Deal.workspace_id) & (Task.deal_id == Deal.id))
        .where(
            Deal.workspace_id == workspace_id,
            Deal.pipeline_id == pipeline_id,
            Task.done_at.is_(None),
            Task.due_at < utcnow(),
        )
        .group_by(Deal.stage_id)
    )
    return {stage_id: int(n) for stage_id, n in rows}


def board(
    session: Session, workspace_id: int, pipeline_id: int, *, per_stage: int = 20, overdue: bool = False
) -> list[tuple[PipelineStage, int, list[tuple[str, int]], list[Deal]]]:
    """Per stage of a pipeline: the deal count, amount sums per currency and the newest ``per_stage`` deals;
    ``overdue``: only deals with an open task past its due time."""
    pipeline = get_pipeline(session, workspace_id, pipeline_id)
    stages = pipeline_stages(session, workspace_id, [pipeline.id])[pipeline.id]
    sums: dict[int, list[tuple[str, int]]] = {s.id: [] for s in stages}
    counts: dict[int, int] = {s.id: 0 for s in stages}
    late = _overdue_deal_ids(workspace_id, utcnow()) if overdue else None
    totals = (
        select(Deal.stage_id, Deal.currency, func.count(), func.coalesce(func.sum(Deal.amount_minor), 0))
        .where(Deal.workspace_id == workspace_id, Deal.pipeline_id == pipeline.id)
        .group_by(Deal.stage_id, Deal.currency)
        .order_by(Deal.stage_id, Deal.currency)
    )
    if late is not None:
        totals = totals.where(Deal.id.in_(late))
    rows = session.execute(totals)
    for stage_id, currency, count, total in rows:
        counts[stage_id] += int(count)
        sums[stage_id].append((currency, int(total or 0)))
    out = []
    for stage in stages:
        newest = select(Deal).where(Deal.workspace_id == workspace_id, Deal.stage_id == stage.id)
        if late is not None:
            newest = newest.where(Deal.id.in_(late))
        deals = list(session.scalars(newest.order_by(Deal.id.desc()).limit(per_stage)))
        out.append((stage, counts[stage.id], sums[stage.id], deals))
    return out


# --- the buying group -----------------------------------------------------------------------------------------------


def add_deal_contact(session: Session, workspace_id: int, deal_id: int, data: DealContactIn) -> DealContact:
    """Add a contact of this workspace to a deal (adding it again changes its role); the primary contact is the
    deal's own ``contact_id`` and is refused here."""
    deal = get_deal(session, workspace_id, deal_id)
    contact = contacts_service.get_contact(session, workspace_id, data.contact_id)
    if contact.id == deal.contact_id:
        raise DealError("contact_id", f"contact {contact.id} is the deal's primary contact", code="primary_contact")
    role = (data.role or "").strip() or None
    row = session.scalar(
        select(DealContact).where(
            DealContact.workspace_id == workspace_id,
            DealContact.deal_id == deal.id,
            DealContact.contact_id == contact.id,
        )
    )
    if row is None:
        row = DealContact(
            workspace_id=workspace_id, deal_id=deal.id, contact_id=contact.id, role=role, added_at=utcnow()
        )
        session.add(row)
    else:
        row.role = role
    session.flush()
    return row


def remove_deal_contact(session: Session, workspace_id: int, deal_id: int, contact_id: int) -> None:
    """Take a further contact off a deal; NotFound when it is not one of the deal's."""
    get_deal(session, workspace_id, deal_id)
    row = session.scalar(
        select(DealContact).where(
            DealContact.workspace_id == workspace_id,
            DealContact.deal_id == deal_id,
            DealContact.contact_id == contact_id,
        )
    )
    if row is None:
        raise NotFound("contact_id", f"contact {contact_id} is not on deal {deal_id}")
    session.delete(row)
    session.flush()


def deal_contacts(session: Session, workspace_id: int, deal_id: int) -> list[DealContactRead]:
    """The deal's people: the primary contact first, then the others in the order they were added."""
    deal = get_deal(session, workspace_id, deal_id)
    rows: list[tuple[int, str | None, bool]] = []
    if deal.contact_id is not None:
        rows.append((deal.contact_id, None, True))
    rows += [
        (cid, role, False)
        for cid, role in session.execute(
            select(DealContact.contact_id, DealContact.role)
            .where(DealContact.workspace_id == workspace_id, DealContact.deal_id == deal_id)
            .order_by(DealContact.added_at, DealContact.id)
        )
    ]
    names: dict[int, str] = {}
    if rows:
        for cid, first, last, email in session.execute(
            select(Contact.id, Contact.first_name, Contact.last_name, Contact.email).where(
                Contact.workspace_id == workspace_id, Contact.id.in_([r[0] for r in rows])
            )
        ):
            names[cid] = " ".join(p for p in (first, last) if p) or email or f"#{cid}"
    return [
        DealContactRead(contact_id=cid, role=role, primary=primary, name=names.get(cid, f"#{cid}"))
        for cid, role, primary in rows
        if cid in names
    ]


def move_contact(session: Session, workspace_id: int, keep_id: int, merge_id: int) -> None:
    """A contact merge: the merged contact's places in buying groups go to the kept one (once per deal)."""
    already = set(
        session.scalars(
            select(DealContact.deal_id).where(
                DealContact.workspace_id == workspace_id, DealContact.contact_id == keep_id
            )
        )
    )
    for row in session.scalars(
        select(DealContact).where(DealContact.workspace_id == workspace_id, DealContact.contact_id == merge_id)
    ):
        if row.deal_id in already:
            session.delete(row)
        else:
            row.contact_id = keep_id
    session.flush()
    # A deal whose primary contact is (or becomes) the kept one does not list it twice.
    primary_of = select(Deal.id).where(Deal.workspace_id == workspace_id, Deal.contact_id.in_((keep_id, merge_id)))
    for row in session.scalars(
        select(DealContact).where(
            DealContact.workspace_id == workspace_id,
            DealContact.contact_id == keep_id,
            DealContact.deal_id.in_(primary_of),
        )
    ):
        session.delete(row)
    session.flush()


# --- objections -----------------------------------------------------------------------------------------------------


def add_objection(session: Session, workspace_id: int, deal_id: int, data: ObjectionCreate) -> DealObjection:
    """Log an objection on a deal."""
    deal = get_deal(session, workspace_id, deal_id)
    row = DealObjection(
        workspace_id=workspace_id,
        deal_id=deal.id,
        text=data.text,
        response=data.response,
        raised_at=data.raised_at or utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def list_objections(session: Session, workspace_id: int, deal_id: int) -> list[DealObjection]:
    """A deal's objections, oldest first."""
    get_deal(session, workspace_id, deal_id)
    return list(
        session.scalars(
            select(DealObjection)
            .where(DealObjection.workspace_id == workspace_id, DealObjection.deal_id == deal_id)
            .order_by(DealObjection.raised_at, DealObjection.id)
        )
    )


# --- tasks ----------------------------------------------------------------------------------------------------------


def _task_links(session: Session, workspace_id: int, deal_id: int | None, contact_id: int | None) -> int | None:
    """Check the deal and contact exist here; the contact defaults to the deal's."""
    deal = get_deal(session, workspace_id, deal_id) if deal_id is not None else None
    if contact_id is not None:
        return contacts_service.get_contact(session, workspace_id, contact_id).id
    return deal.contact_id if deal is not None else None


def create_task(session: Session, workspace_id: int, data: TaskCreate, *, now: datetime | None = None) -> Task:
    """A follow-up task; a due time in the past is refused."""
    now = now or utcnow()
    if (data.due_at is None) == (data.due_in_working_hours is None):
        raise DealError("due_at", "give due_at or due_in_working_hours (one of them)", code="due_missing")
    if data.owner_id is not None:
        _check_owner(session, workspace_id, data.owner_id)
    if data.due_at is None:
        from suppilo.deals import assignment

        due_at = assignment.due_for_owner(session, workspace_id, data.owner_id, now, data.due_in_working_hours or 0)
    else:
        due_at = data.due_at
    if due_at < now:
        raise DealError("due_at", f"due_at {due_at.isoformat()} is in the past", code="due_in_past")
    if data.reminder_at is not None and data.reminder_at > due_at:
        raise DealError("reminder_at", "the reminder comes after the task is due", code="reminder_after_due")
    contact_id = _task_links(session, workspace_id, data.deal_id, data.contact_id)
    task = Task(
        workspace_id=workspace_id,
        deal_id=data.deal_id,
        contact_id=contact_id,
        owner_id=data.owner_id,
        kind=data.kind,
        title=data.title,
        due_at=due_at,
        reminder_at=data.reminder_at,
    )
    session.add(task)
    session.flush()
    return task


def get_task(session: Session, workspace_id: int, task_id: int) -> Task:
    """A task of this workspace; NotFound otherwise."""
    task = session.scalar(select(Task).where(Task.workspace_id == workspace_id, Task.id == task_id))
    if task is None:
        raise NotFound("task_id", f"task {task_id} not found")
    return task


def update_task(session: Session, workspace_id: int, task_id: int, data: TaskUpdate) -> Task:
    """Change a task; a new due time must not be in the past."""
    task = get_task(session, workspace_id, task_id)
    fields = data.model_dump(exclude_unset=True)
    for key in ("title", "kind", "due_at"):
        if key in fields and fields[key] is None:
            raise DealError(key, f"{key} cannot be empty")
    if "due_at" in fields and fields["due_at"] < utcnow():
        raise DealError("due_at", f"due_at {fields['due_at'].isoformat()} is in the past", code="due_in_past")
    if fields.get("owner_id") is not None:
        _check_owner(session, workspace_id, fields["owner_id"])
    if "reminder_at" in fields and fields["reminder_at"] != task.reminder_at:
        task.reminder_sent_at = None  # a new reminder time gets its own message
    for key, value in fields.items():
        setattr(task, key, value)
    if task.reminder_at is not None and task.reminder_at > task.due_at:
        raise DealError("reminder_at", "the reminder comes after the task is due", code="reminder_after_due")
    session.flush()
    return task


def complete_task(session: Session, workspace_id: int, task_id: int) -> Task:
    """Mark a task done (once; completing again keeps the first time)."""
    task = get_task(session, workspace_id, task_id)
    if task.done_at is None:
        task.done_at = utcnow()
        if task.handoff_at is not None and task.responded_at is None:
            task.responded_at = task.done_at
        session.flush()
    return task


def delete_task(session: Session, workspace_id: int, task_id: int) -> None:
    """Remove a task."""
    session.delete(get_task(session, workspace_id, task_id))
    session.flush()


def list_tasks(
    session: Session,
    workspace_id: int,
    *,
    owner_id: int | None = None,
    deal_id: int | None = None,
    overdue: bool = False,
    done: bool | None = None,
    handoff: bool | None = None,
    now: datetime | None = None,
    limit: int = 200,
) -> list[Task]:
    """Tasks by due time; ``overdue``: not done and due before now; ``handoff``: only (or no) hand-off tasks."""
    query = select(Task).where(Task.workspace_id == workspace_id)
    if handoff is not None:
        query = query.where(Task.handoff_at.is_not(None) if handoff else Task.handoff_at.is_(None))
    if owner_id is not None:
        query = query.where(Task.owner_id == owner_id)
    if deal_id is not None:
        query = query.where(Task.deal_id == deal_id)
    if overdue:
        query = query.where(Task.done_at.is_(None), Task.due_at < (now or utcnow()))
    elif done is not None:
        query = query.where(Task.done_at.is_not(None) if done else Task.done_at.is_(None))
    return list(session.scalars(query.order_by(Task.due_at, Task.id).limit(check_limit(limit))))


# --- activities -----------------------------------------------------------------------------------------------------


def create_activity(session: Session, workspace_id: int, data: ActivityCreate) -> Activity:
    """Log a call, meeting, email or note on a deal and/or a contact."""
    if data.deal_id is None and data.contact_id is None:
        raise DealError("deal_id", "an activity belongs to a deal or a contact", code="missing_subject")
    contact_id = _task_links(session, workspace_id, data.deal_id, data.contact_id)
    if data.owner_id is not None:
        _check_owner(session, workspace_id, data.owner_id)
    row = Activity(
        workspace_id=workspace_id,
        deal_id=data.deal_id,
        contact_id=contact_id,
        owner_id=data.owner_id,
        kind=data.kind,
        body=data.body,
        occurred_at=data.occurred_at or utcnow(),
    )
    session.add(row)
    session.flush()
    from suppilo.deals import assignment

    assignment.mark_responded(session, workspace_id, row.occurred_at, contact_id=contact_id, deal_id=data.deal_id)
    return row


def list_activities(
    session: Session, workspace_id: int, *, deal_id: int | None = None, contact_id: int | None = None, limit: int = 200
) -> list[Activity]:
    """Activities, newest first."""
    query = select(Activity).where(Activity.workspace_id == workspace_id)
    if deal_id is not None:
        get_deal(session, workspace_id, deal_id)
        query = query.where(Activity.deal_id == deal_id)
    if contact_id is not None:
        query = query.where(Activity.contact_id == contact_id)
    return list(
        session.scalars(query.order_by(Activity.occurred_at.desc(), Activity.id.desc()).limit(check_limit(limit)))
    )


def open_tasks_of(
    session: Session,
    workspace_id: int,
    owner_ids: list[int],
    *,
    overdue: bool = False,
    now: datetime | None = None,
    limit: int = 200,
) -> list[tuple[Task, str | None]]:
    """Open tasks of these owners by due time (``overdue``: only those due before now), each with its deal's name."""
    if not owner_ids:
        return []
    query = (
        select(Task, Deal.name)
        .outerjoin(Deal, (Deal.workspace_id == Task.workspace_id) & (Deal.id == Task.deal_id))
        .where(Task.workspace_id == workspace_id, Task.owner_id.in_(owner_ids), Task.done_at.is_(None))
    )
    if overdue:
        query = query.where(Task.due_at < (now or utcnow()))
    rows = session.execute(query.order_by(Task.due_at, Task.id).limit(check_limit(limit)))
    return [(task, name) for task, name in rows]


def count_open_tasks(
    session: Session, workspace_id: int, owner_ids: list[int], *, now: datetime | None = None
) -> tuple[int, int]:
    """How many open tasks these owners have, and how many of them are overdue."""
    if not owner_ids:
        return 0, 0
    now = now or utcnow()
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(case((Task.due_at < now, 1), else_=0)), 0)).where(
            Task.workspace_id == workspace_id, Task.owner_id.in_(owner_ids), Task.done_at.is_(None)
        )
    ).one()
    return int(row[0]), int(row[1])
