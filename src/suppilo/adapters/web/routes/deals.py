"""A deal's page (amount, stage, owner, BANT form, proposals with lines and totals, tasks, objections, activities
and the stage history), my tasks and overdue tasks, and the forecast view with its chart and CSV export.

Every figure comes from ``deals.service`` / ``deals.proposals`` / ``deals.forecast`` — the functions the API calls.
Every role reads these pages; admins, marketers and sales change deals (the board's ``edit`` permission). Admins
can look at another user's or a team's tasks. A deal of another workspace answers 404.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.adapters.http.deps import DbSession, ReadSession
from suppilo.adapters.web import charts, csrf
from suppilo.adapters.web.auth import Ctx, WebError, Workspace_
from suppilo.adapters.web.background import Refreshes
from suppilo.adapters.web.errors import error_text
from suppilo.adapters.web.i18n import Formatter, translations
from suppilo.adapters.web.templating import render
from suppilo.commerce.models import Product
from suppilo.commerce.money import MoneyError, exponent, is_currency
from suppilo.companies.models import Company
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.deals import forecast as deals_forecast
from suppilo.deals import forecast_snapshots
from suppilo.deals import proposals as deals_proposals
from suppilo.deals import service as deals_service
from suppilo.deals.models import Deal, Pipeline, SalesTeam, SalesTeamMember, Task
from suppilo.deals.schemas import (
    ActivityCreate,
    DealContactIn,
    DealUpdate,
    ObjectionCreate,
    ProposalCreate,
    ProposalLineIn,
    ProposalUpdate,
    TaskCreate,
)
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.transfer.exporter import neutralise
from suppilo.workspaces.models import Membership, User

router = APIRouter()
# Who may look at another user's or a team's tasks.
MANAGER_ROLES = frozenset({"admin"})
PROPOSAL_LINES = 3
TASKS_SHOWN = 200
FORECAST_GROUPS = ("month", "owner", "team", "region", "country", "stage")
STALL_GROUPS = ("team", "region", "country", "owner")
# Series colours (SVG presentation attributes, which the style-src policy does not govern): weighted, commit, best.
PALETTE = ("#2f6fdb", "#3a9d5d", "#e07b39")
BANT_FIELDS = ("budget", "budget_currency", "authority", "decision_maker", "need", "timeline", "qualification_status")


def _actor(ctx: Ctx) -> str:
    return f"user:{ctx.user.info.user_id} ({ctx.user.info.email})"


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _members(session: Session, workspace_id: int) -> list[tuple[int, str]]:
    """The workspace's users (id, name or email) by name."""
    rows = session.execute(
        select(User.id, User.name, User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == workspace_id)
    )
    return sorted(((uid, name or email) for uid, name, email in rows), key=lambda m: m[1].lower())


def _person(first: str | None, last: str | None, email: str | None, cid: int) -> str:
    return " ".join(p for p in (first, last) if p) or email or f"#{cid}"


def _errors_of(exc: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        out.setdefault(key, err["msg"])
    return out


def _local_time(text: str, zone: str) -> datetime:
    """A ``datetime-local`` value (``YYYY-MM-DDTHH:MM``) in the user's zone as an aware datetime."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    return value


def _amount(text: str, currency: str) -> int:
    """Money typed in major units (``12000.50``, ``12 000,50``, ``12,000.50``) as integer minor units of
    ``currency``; ValueError when it is not a non-negative amount with at most the currency's decimals."""
    raw = text.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
    if "," in raw and "." in raw:
        raw = raw.replace(",", "")
    elif "," in raw:
        raw = raw.replace(",", ".")
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise ValueError(raw) from exc
    digits = exponent(currency)
    if not value.is_finite() or value < 0:
        raise ValueError(raw)
    places = value.as_tuple().exponent  # an int once the value is finite (a letter only for NaN and infinity)
    if not isinstance(places, int) or places < -digits:
        raise ValueError(raw)
    return int(value.scaleb(digits))


# --- the deal page ---------------------------------------------------------------------------------------------------


def _bant_values(deal: Deal) -> dict[str, str]:
    budget = ""
    if deal.budget_minor is not None and deal.budget_currency:
        budget = str(Decimal(deal.budget_minor).scaleb(-exponent(deal.budget_currency)))
    return {
        "budget": budget,
        "budget_currency": deal.budget_currency or "",
        "authority": deal.authority or "",
        "decision_maker": "" if deal.decision_maker is None else ("yes" if deal.decision_maker else "no"),
        "need": deal.need or "",
        "timeline": deal.timeline or "",
        "qualification_status": deal.qualification_status,
        "version": str(deal.version),
    }


def _deal_page(
    request: Request,
    ctx: Ctx,
    session: Session,
    deal_id: int,
    *,
    status: int = 200,
    forms: dict[str, dict[str, Any]] | None = None,
    notice: str = "",
) -> Response:
    try:
        deal = deals_service.get_deal(session, ctx.workspace_id, deal_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    ws = ctx.workspace_id
    pipeline = deals_service.get_pipeline(session, ws, deal.pipeline_id)
    stages = deals_service.pipeline_stages(session, ws, [pipeline.id])[pipeline.id]
    labels = {s.id: s.label for s in stages}
    members = _members(session, ws)
    names = dict(members)
    contact = None
    if deal.contact_id is not None:
        row = session.execute(
            select(Contact.id, Contact.first_name, Contact.last_name, Contact.email).where(
                Contact.workspace_id == ws, Contact.id == deal.contact_id
            )
        ).first()
        if row is not None:
            contact = (row.id, _person(row.first_name, row.last_name, row.email, row.id))
    company = None
    if deal.company_id is not None:
        company = session.scalar(select(Company.name).where(Company.workspace_id == ws, Company.id == deal.company_id))
    history = [
        (change, labels.get(change.from_stage_id or 0, ""), labels.get(change.to_stage_id, ""))
        for change in deals_service.stage_history(session, ws, deal.id)
    ]
    tasks = list(
        session.scalars(
            select(Task)
            .where(Task.workspace_id == ws, Task.deal_id == deal.id)
            .order_by(Task.done_at.is_not(None), Task.due_at, Task.id)
        )
    )
    proposals = [
        (p, deals_proposals.proposal_lines(session, p)) for p in deals_proposals.list_proposals(session, ws, deal.id)
    ]
    products = list(
        session.execute(
            select(Product.sku, Product.name, Product.price_minor, Product.currency)
            .where(Product.workspace_id == ws)
            .order_by(Product.name)
            .limit(200)
        )
    )
    forms = dict(forms or {})
    forms.setdefault("bant", {"values": _bant_values(deal), "errors": {}})
    forms.setdefault("task", {"values": {"kind": "call", "owner_id": str(ctx.user.info.user_id)}, "errors": {}})
    forms.setdefault("objection", {"values": {}, "errors": {}})
    forms.setdefault("people", {"values": {}, "errors": {}})
    forms.setdefault("activity", {"values": {"kind": "note"}, "errors": {}})
    forms.setdefault("proposal", {"values": {}, "errors": {}})
    return render(
        request,
        "deal.html",
        language=ctx.language,
        timezone=ctx.timezone,
        status_code=status,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        active="pipeline",
        deal=deal,
        pipeline=pipeline,
        stage_label=labels.get(deal.stage_id, ""),
        owner_name=names.get(deal.owner_id) if deal.owner_id is not None else None,
        contact=contact,
        people=deals_service.deal_contacts(session, ws, deal.id),
        company=company,
        history=history,
        tasks=tasks,
        now=utcnow(),
        names=names,
        members=members,
        objections=deals_service.list_objections(session, ws, deal.id),
        activities=deals_service.list_activities(session, ws, deal_id=deal.id, limit=100),
        proposals=proposals,
        products=products,
        proposal_lines=PROPOSAL_LINES,
        forms=forms,
        notice=notice,
    )


@router.get("/w/{slug}/deals/{deal_id}")
def deal_page(request: Request, ctx: Workspace_, session: ReadSession, deal_id: int, done: str = "") -> Response:
    ctx.require("pipeline")
    return _deal_page(request, ctx, session, deal_id, notice=done)


async def _editing(request: Request, ctx: Ctx) -> dict[str, str]:
    await csrf.check(request, ctx.user.info.csrf_token)
    ctx.require("edit")
    return await _form(request)


def _back(ctx: Ctx, deal_id: int, done: str, anchor: str = "") -> Response:
    return RedirectResponse(f"{ctx.base}/deals/{deal_id}?done={done}{anchor}", status_code=303)


def _refused(
    request: Request,
    ctx: Ctx,
    session: Session,
    deal_id: int,
    form: str,
    values: dict[str, Any],
    errors: dict[str, str],
) -> Response:
    """The deal page again (nothing of the refused change kept) with the form's errors and what was typed."""
    session.rollback()
    status = 409 if "version" in errors else 422
    return _deal_page(request, ctx, session, deal_id, status=status, forms={form: {"values": values, "errors": errors}})


@router.post("/w/{slug}/deals/{deal_id}/bant")
async def save_bant(request: Request, ctx: Workspace_, session: DbSession, deal_id: int) -> Response:
    """Save the BANT fields; a bad value comes back at its field with what was typed, a stale version with 409."""
    form = await _editing(request, ctx)
    try:
        deal = deals_service.get_deal(session, ctx.workspace_id, deal_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    tr = translations(ctx.language)
    values = {k: form.get(k, "") for k in (*BANT_FIELDS, "version")}
    errors: dict[str, str] = {}
    currency = values["budget_currency"].strip().upper()
    values["budget_currency"] = currency
    budget: int | None = None
    if currency and not is_currency(currency):
        errors["budget_currency"] = tr.gettext("Give a three-letter ISO 4217 currency code such as EUR.")
        currency = ""
    if values["budget"].strip():
        try:
            budget = _amount(values["budget"], currency or deal.currency)
        except (ValueError, MoneyError):
            errors["budget"] = tr.gettext("Give the budget as an amount such as 12000.50.")
        if not currency:
            errors.setdefault("budget_currency", tr.gettext("A budget needs its currency."))
    decision = {"": None, "yes": True, "no": False}.get(values["decision_maker"], "invalid")
    if decision == "invalid":
        errors["decision_maker"] = tr.gettext("Choose yes, no or unknown.")
    try:
        version = int(values["version"])
    except ValueError:
        version = deal.version
    if errors:
        return _refused(request, ctx, session, deal_id, "bant", values, errors)
    try:
        data = DealUpdate(
            version=version,
            budget_minor=budget,
            budget_currency=currency or None,
            authority=values["authority"].strip() or None,
            decision_maker=decision,
            need=values["need"].strip() or None,
            timeline=values["timeline"].strip() or None,
            qualification_status=values["qualification_status"] or None,
        )
        deals_service.update_deal(session, ctx.workspace_id, deal_id, data)
    except ValidationError as exc:
        return _refused(request, ctx, session, deal_id, "bant", values, _errors_of(exc))
    except Conflict:
        # Keep what was typed; the current version lets the user save it over the other change deliberately.
        session.rollback()
        values["version"] = str(deals_service.get_deal(session, ctx.workspace_id, deal_id).version)
        message = tr.gettext("Someone changed this deal meanwhile. Check the page, then save again to keep your text.")
        return _refused(request, ctx, session, deal_id, "bant", values, {"version": message})
    except DomainError as exc:
        return _refused(
            request, ctx, session, deal_id, "bant", values, {exc.field or "form": error_text(exc, ctx.language)}
        )
    return _back(ctx, deal_id, "bant", "#bant")


@router.post("/w/{slug}/deals/{deal_id}/tasks")
async def add_task(request: Request, ctx: Workspace_, session: DbSession, deal_id: int) -> Response:
    """Add a follow-up task on the deal; the due time is entered in the user's time zone."""
    form = await _editing(request, ctx)
    tr = translations(ctx.language)
    values = {k: form.get(k, "") for k in ("title", "kind", "due_at", "reminder_at", "owner_id")}
    errors: dict[str, str] = {}
    times: dict[str, datetime | None] = {}
    for key in ("due_at", "reminder_at"):
        times[key] = None
        if values[key].strip():
            try:
                times[key] = _local_time(values[key], ctx.timezone)
            except ValueError:
                errors[key] = tr.gettext("Give a date and time.")
        elif key == "due_at":
            errors[key] = tr.gettext("Give a date and time.")
    owner: int | None = None
    if values["owner_id"].strip():
        try:
            owner = int(values["owner_id"])
        except ValueError:
            errors["owner_id"] = tr.gettext("Choose a user of this workspace.")
    if errors:
        return _refused(request, ctx, session, deal_id, "task", values, errors)
    try:
        data = TaskCreate(
            title=values["title"],
            kind=values["kind"] or "todo",
            due_at=times["due_at"],
            reminder_at=times["reminder_at"],
            deal_id=deal_id,
            owner_id=owner,
        )
        task = deals_service.create_task(session, ctx.workspace_id, data)
    except ValidationError as exc:
        return _refused(request, ctx, session, deal_id, "task", values, _errors_of(exc))
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    except DomainError as exc:
        return _refused(
            request, ctx, session, deal_id, "task", values, {exc.field or "title": error_text(exc, ctx.language)}
        )
    return _back(ctx, deal_id, "task", f"#task-{task.id}")


def _safe_back(ctx: Ctx, value: str, default: str) -> str:
    """A page of this workspace to return to (never another site)."""
    if value.startswith(ctx.base + "/") and "//" not in value[1:] and "\\" not in value:
        return value
    return default


@router.post("/w/{slug}/tasks/{task_id}/complete")
async def complete_task(request: Request, ctx: Workspace_, session: DbSession, task_id: int) -> Response:
    """Mark a task done and go back to the page it was completed from."""
    form = await _editing(request, ctx)
    try:
        task = deals_service.complete_task(session, ctx.workspace_id, task_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    default = f"{ctx.base}/deals/{task.deal_id}" if task.deal_id is not None else f"{ctx.base}/tasks"
    return RedirectResponse(_safe_back(ctx, form.get("next", ""), default), status_code=303)


@router.post("/w/{slug}/deals/{deal_id}/contacts")
async def add_contact(request: Request, ctx: Workspace_, session: DbSession, deal_id: int) -> Response:
    """Add a contact of this workspace (by email) to the deal's buying group with a role."""
    form = await _editing(request, ctx)
    tr = translations(ctx.language)
    values = {k: form.get(k, "") for k in ("email", "role")}
    email = values["email"].strip().lower()
    contact_id = None
    if email:
        contact_id = session.scalar(
            select(Contact.id).where(Contact.workspace_id == ctx.workspace_id, func.lower(Contact.email) == email)
        )
    if contact_id is None:
        message = tr.gettext("No contact with this email in this workspace.")
        return _refused(request, ctx, session, deal_id, "people", values, {"email": message})
    try:
        deals_service.add_deal_contact(
            session, ctx.workspace_id, deal_id, DealContactIn(contact_id=contact_id, role=values["role"] or None)
        )
    except ValidationError as exc:
        return _refused(request, ctx, session, deal_id, "people", values, _errors_of(exc))
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    except DomainError as exc:
        found = {"email" if exc.field == "contact_id" else (exc.field or "email"): error_text(exc, ctx.language)}
        return _refused(request, ctx, session, deal_id, "people", values, found)
    return _back(ctx, deal_id, "contact", "#people")


@router.post("/w/{slug}/deals/{deal_id}/contacts/{contact_id}/remove")
async def remove_contact(
    request: Request, ctx: Workspace_, session: DbSession, deal_id: int, contact_id: int
) -> Response:
    await _editing(request, ctx)
    try:
        deals_service.remove_deal_contact(session, ctx.workspace_id, deal_id, contact_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    return _back(ctx, deal_id, "contact_removed", "#people")


@router.post("/w/{slug}/deals/{deal_id}/objections")
async def add_objection(request: Request, ctx: Workspace_, session: DbSession, deal_id: int) -> Response:
    form = await _editing(request, ctx)
    values = {k: form.get(k, "") for k in ("text", "response")}
    try:
        deals_service.add_objection(
            session,
            ctx.workspace_id,
            deal_id,
            ObjectionCreate(text=values["text"], response=values["response"].strip() or None),
        )
    except ValidationError as exc:
        return _refused(request, ctx, session, deal_id, "objection", values, _errors_of(exc))
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    return _back(ctx, deal_id, "objection", "#objections")


@router.post("/w/{slug}/deals/{deal_id}/activities")
async def add_activity(request: Request, ctx: Workspace_, session: DbSession, deal_id: int) -> Response:
    form = await _editing(request, ctx)
    values = {k: form.get(k, "") for k in ("kind", "body")}
    try:
        deals_service.create_activity(
            session,
            ctx.workspace_id,
            ActivityCreate(
                kind=values["kind"],
                body=values["body"].strip(),
                deal_id=deal_id,
                owner_id=ctx.user.info.user_id,
            ),
        )
    except ValidationError as exc:
        return _refused(request, ctx, session, deal_id, "activity", values, _errors_of(exc))
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    except DomainError as exc:
        return _refused(
            request, ctx, session, deal_id, "activity", values, {exc.field or "body": error_text(exc, ctx.language)}
        )
    return _back(ctx, deal_id, "activity", "#activities")


@router.post("/w/{slug}/deals/{deal_id}/proposals")
async def add_proposal(request: Request, ctx: Workspace_, session: DbSession, deal_id: int) -> Response:
    """A draft proposal from catalogue lines (SKU and quantity), a percentage discount and a validity day."""
    form = await _editing(request, ctx)
    try:
        deal = deals_service.get_deal(session, ctx.workspace_id, deal_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    tr = translations(ctx.language)
    keys = ["title", "valid_until", "discount_percent"]
    keys += [f"{name}_{i}" for i in range(PROPOSAL_LINES) for name in ("sku", "quantity")]
    values = {k: form.get(k, "") for k in keys}
    errors: dict[str, str] = {}
    valid_until: date | None = None
    try:
        valid_until = date.fromisoformat(values["valid_until"].strip())
    except ValueError:
        errors["valid_until"] = tr.gettext("Give a date.")
    discount_bp: int | None = None
    if values["discount_percent"].strip():
        try:
            percent = Decimal(values["discount_percent"].strip().replace(",", "."))
            if not percent.is_finite() or not 0 <= percent <= 100:
                raise InvalidOperation
            discount_bp = int((percent * 100).to_integral_value())
        except InvalidOperation:
            errors["discount_percent"] = tr.gettext("Give a percentage from 0 to 100.")
    lines: list[ProposalLineIn] = []
    for i in range(PROPOSAL_LINES):
        sku = values[f"sku_{i}"].strip()
        if not sku:
            continue
        try:
            quantity = int(values[f"quantity_{i}"].strip() or "1")
            if quantity < 1:
                raise ValueError
        except ValueError:
            errors[f"lines[{len(lines)}].quantity"] = tr.gettext("Give a whole number of at least 1.")
            quantity = 1
        lines.append(ProposalLineIn(sku=sku, quantity=quantity))
    if not lines:
        errors["lines[0].sku"] = tr.gettext("Add at least one product.")
    # Service paths name the n-th given line; map them back to the rows as typed.
    rows = [i for i in range(PROPOSAL_LINES) if values[f"sku_{i}"].strip()]

    def row_errors(found: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, message in found.items():
            if key.startswith("lines[") and "]" in key:
                n = int(key[6 : key.index("]")])
                field = key[key.index("]") + 2 :]
                field = "quantity" if field == "quantity" else "sku"
                out[f"{field}_{rows[n] if n < len(rows) else 0}"] = message
            else:
                out[key.removeprefix("lines.0.")] = message
        return out

    if errors:
        return _refused(request, ctx, session, deal_id, "proposal", values, row_errors(errors))
    try:
        data = ProposalCreate(
            title=values["title"].strip(),
            valid_until=valid_until,
            discount_bp=discount_bp,
            currency=deal.currency,
            lines=lines,
        )
        deals_proposals.create_proposal(session, ctx.workspace_id, deal_id, data)
    except ValidationError as exc:
        return _refused(request, ctx, session, deal_id, "proposal", values, row_errors(_errors_of(exc)))
    except DomainError as exc:
        found = {exc.field or "title": error_text(exc, ctx.language)}
        if exc.field == "discount_minor":
            found = {"discount_percent": error_text(exc, ctx.language)}
        return _refused(request, ctx, session, deal_id, "proposal", values, row_errors(found))
    return _back(ctx, deal_id, "proposal", "#proposals")


@router.post("/w/{slug}/proposals/{proposal_id}/{action}")
async def proposal_action(
    request: Request, ctx: Workspace_, session: DbSession, proposal_id: int, action: str
) -> Response:
    """Send (mark sent), accept (the deal's amount becomes the total) or reject a proposal."""
    await _editing(request, ctx)
    if action not in ("send", "accept", "reject"):
        raise WebError(404, "not_found")
    try:
        proposal = deals_proposals.get_proposal(session, ctx.workspace_id, proposal_id)
        deal_id = proposal.deal_id
        if action == "send":
            deals_proposals.update_proposal(session, ctx.workspace_id, proposal_id, ProposalUpdate(status="sent"))
        elif action == "accept":
            deals_proposals.accept_proposal(session, ctx.workspace_id, proposal_id)
        else:
            deals_proposals.reject_proposal(session, ctx.workspace_id, proposal_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    except DomainError as exc:
        session.rollback()
        return _deal_page(
            request,
            ctx,
            session,
            deal_id,
            status=422,
            forms={"proposal_action": {"values": {}, "errors": {"form": error_text(exc, ctx.language)}}},
        )
    return _back(ctx, deal_id, f"proposal_{action}", "#proposals")


# --- my tasks --------------------------------------------------------------------------------------------------------


@router.get("/w/{slug}/tasks")
def tasks_page(
    request: Request,
    ctx: Workspace_,
    session: ReadSession,
    user: str = "",
    team: str = "",
    show: str = "open",
    done: str = "",
) -> Response:
    """The signed-in user's open (or only overdue) tasks, overdue ones marked; admins pick a user or a team."""
    ctx.require("pipeline")
    ws = ctx.workspace_id
    manager = ctx.role in MANAGER_ROLES
    if (team or (user and user != str(ctx.user.info.user_id))) and not manager:
        raise WebError(403, "forbidden")
    members = _members(session, ws)
    teams = list(
        session.execute(
            select(SalesTeam.id, SalesTeam.name).where(SalesTeam.workspace_id == ws).order_by(SalesTeam.name)
        )
    )
    owners = [ctx.user.info.user_id]
    chosen_user, chosen_team = "", ""
    if team:
        if not team.isdigit() or int(team) not in {t for t, _ in teams}:
            raise WebError(404, "not_found")
        chosen_team = team
        owners = list(
            session.scalars(
                select(SalesTeamMember.user_id).where(
                    SalesTeamMember.workspace_id == ws, SalesTeamMember.team_id == int(team)
                )
            )
        )
    elif user:
        if not user.isdigit() or int(user) not in {m for m, _ in members}:
            raise WebError(404, "not_found")
        chosen_user = user
        owners = [int(user)]
    overdue_only = show == "overdue"
    now = utcnow()
    rows = deals_service.open_tasks_of(session, ws, owners, overdue=overdue_only, now=now, limit=TASKS_SHOWN)
    open_count, overdue_count = deals_service.count_open_tasks(session, ws, owners, now=now)
    return render(
        request,
        "tasks.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        active="pipeline",
        rows=rows,
        now=now,
        names=dict(members),
        members=members,
        teams=teams,
        manager=manager,
        chosen_user=chosen_user,
        chosen_team=chosen_team,
        show="overdue" if overdue_only else "open",
        open_count=open_count,
        overdue_count=overdue_count,
        shown=TASKS_SHOWN,
        mine=not (chosen_user or chosen_team) or chosen_user == str(ctx.user.info.user_id),
        back=str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        done=done,
    )


# --- forecast --------------------------------------------------------------------------------------------------------


def _forecast_params(
    session: Session, ctx: Ctx, group_by: str, pipeline: str, stalls_by: str
) -> tuple[str, int | None, str, dict[str, str]]:
    """The forecast's grouping, pipeline and stalls grouping, with errors per parameter (then the defaults are used)."""
    tr = translations(ctx.language)
    errors: dict[str, str] = {}
    if group_by not in FORECAST_GROUPS:
        errors["group_by"] = tr.gettext("Choose one of the groupings offered.")
        group_by = "month"
    if stalls_by not in STALL_GROUPS:
        errors["stalls_by"] = tr.gettext("Choose one of the groupings offered.")
        stalls_by = "team"
    pipeline_id: int | None = None
    if pipeline:
        if not pipeline.isdigit():
            errors["pipeline"] = tr.gettext("Choose one of the pipelines offered.")
        else:
            try:
                pipeline_id = deals_service.get_pipeline(session, ctx.workspace_id, int(pipeline)).id
            except NotFound:
                errors["pipeline"] = tr.gettext("Choose one of the pipelines offered.")
    return group_by, pipeline_id, stalls_by, errors


def _forecast(
    session: Session, ctx: Ctx, group_by: str, pipeline: str, stalls_by: str
) -> tuple[Any, dict[str, str], int | None]:
    """The forecast computed now (the CSV), with errors per parameter (then the defaults are used)."""
    group_by, pipeline_id, stalls_by, errors = _forecast_params(session, ctx, group_by, pipeline, stalls_by)
    data = deals_forecast.workspace_forecast(
        session, ctx.workspace_id, group_by=group_by, pipeline_id=pipeline_id, stalls_by=stalls_by
    )
    return data, errors, pipeline_id


_refreshing = Refreshes("forecast")


def _refresh_forecast(factory: sessionmaker[Session], key: tuple[int, str, int | None, str]) -> None:
    # Computed in a read-only transaction, written in a short one: SQLite's write lock is not held while computing.
    forecast_snapshots.refresh_apart(factory, *key)


def forecast_figures(
    session: Session, factory: sessionmaker[Session], key: tuple[int, str, int | None, str]
) -> tuple[Any, datetime, bool] | None:
    """The forecast page's figures, their time and whether newer data overtook them, from the snapshot of these
    parameters (recomputed by one background thread when overtaken, and by the worker's ``forecast`` job); None while
    the first computation of parameters never asked for runs in that thread (the page polls until it is there)."""
    row = forecast_snapshots.snapshot(session, *key)
    if row is None:
        _refreshing.start(key, lambda: _refresh_forecast(factory, key))
        return None
    stale = not forecast_snapshots.is_current(session, row)
    if stale:
        _refreshing.start(key, lambda: _refresh_forecast(factory, key))
    return forecast_snapshots.figures_of(row), forecast_snapshots.computed_at(row), stale


def clear_forecast_refreshes() -> None:
    """Forget background refreshes in flight (the figures themselves live in ``forecast_snapshots``)."""
    _refreshing.clear()


def _group_label(ctx: Ctx, group_by: str, key: str | None, names: dict[int, str], stage_labels: dict[str, str]) -> str:
    tr = translations(ctx.language)
    if key is None:
        return tr.gettext("None")
    if group_by == "owner" and key.isdigit():
        return names.get(int(key), f"#{key}")
    if group_by == "stage":
        return stage_labels.get(key, key)
    if group_by == "month":
        return Formatter(ctx.language, ctx.timezone).month(key)
    return key


def _pipelines(session: Session, ctx: Ctx) -> list[Pipeline]:
    """The workspace's pipelines, default first (read only: the forecast pages never write, so they run in a read
    session that does not hold SQLite's write lock while the forecast is computed)."""
    return list(
        session.scalars(
            select(Pipeline)
            .where(Pipeline.workspace_id == ctx.workspace_id)
            .order_by(Pipeline.is_default.desc(), Pipeline.id)
        )
    )


def _stage_labels(session: Session, ctx: Ctx) -> dict[str, str]:
    pipelines = _pipelines(session, ctx)
    stages = deals_service.pipeline_stages(session, ctx.workspace_id, [p.id for p in pipelines])
    return {s.key: s.label for rows in stages.values() for s in rows}


@router.get("/w/{slug}/forecast")
def forecast_page(
    request: Request,
    ctx: Workspace_,
    session: ReadSession,
    group_by: str = "month",
    pipeline: str = "",
    stalls_by: str = "team",
) -> Response:
    """Weighted forecast, commit and best case per period, owner, team, region, country or stage, with a chart;
    velocity, conversion and stalled deals per stage and per team or territory."""
    ctx.require("pipeline")
    group_by, pipeline_id, stalls_by, errors = _forecast_params(session, ctx, group_by, pipeline, stalls_by)
    shown = forecast_figures(
        session, request.app.state.session_factory, (ctx.workspace_id, group_by, pipeline_id, stalls_by)
    )
    page = partial(
        render,
        request,
        "forecast.html",
        language=ctx.language,
        timezone=ctx.timezone,
        status_code=422 if errors else 200,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        active="pipeline",
        errors=errors,
        groups=FORECAST_GROUPS,
        stall_groups=STALL_GROUPS,
        pipelines=_pipelines(session, ctx),
    )
    if shown is None:
        params = {"group_by": group_by, "pipeline": str(pipeline_id or ""), "stalls_by": stalls_by}
        return page(data=None, params=params)
    data, as_of, stale = shown
    names = dict(_members(session, ctx.workspace_id))
    stage_labels = _stage_labels(session, ctx)
    digits = exponent(data.currency)
    rows = []
    for g in data.groups:
        label = _group_label(ctx, data.group_by, g.key, names, stage_labels)
        rows.append((g.key, label, g.totals))
    chart = None
    converted = [(label, next((t for t in totals if t.currency == data.currency), None)) for _, label, totals in rows]
    converted = [(label, t) for label, t in converted if t is not None]
    if converted:
        keys = [label for label, _ in converted][:12]
        series = [
            [float(Decimal(getattr(t, field)).scaleb(-digits)) for _, t in converted[:12]]
            for field in ("weighted_minor", "commit_minor", "best_case_minor")
        ]
        # Large amounts are drawn in thousands so the axis labels fit.
        thousands = max((v for s in series for v in s), default=0) >= 10_000
        if thousands:
            series = [[v / 1000 for v in s] for s in series]
        bars, labels, ticks, top = charts.grouped_columns(keys, series)
        chart = {"bars": bars, "labels": labels, "ticks": ticks, "top": top, "thousands": thousands}
    return page(
        data=data,
        as_of=as_of,
        stale=stale,
        rows=rows,
        chart=chart,
        unconverted=any(t.currency != data.currency for g in data.groups for t in g.totals),
        palette=PALETTE,
        params={"group_by": data.group_by, "pipeline": str(pipeline_id or ""), "stalls_by": data.stalls_by or "team"},
        stage_labels=stage_labels,
        names=names,
        query=request.url.query,
    )


@router.get("/w/{slug}/forecast.csv")
def forecast_csv(
    ctx: Workspace_, session: ReadSession, group_by: str = "month", pipeline: str = "", stalls_by: str = "team"
) -> Response:
    """The forecast's table as CSV (amounts in major units; formula-like text cells neutralised)."""
    ctx.require("pipeline")
    data, errors, _ = _forecast(session, ctx, group_by, pipeline, stalls_by)
    if errors:
        raise WebError(422, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    names = dict(_members(session, ctx.workspace_id))
    stage_labels = _stage_labels(session, ctx)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([data.group_by, "currency", "converted", "deals", "best_case", "weighted", "commit"])
    for g in data.groups:
        label = _group_label(ctx, data.group_by, g.key, names, stage_labels) if g.key is not None else ""
        for t in g.totals:
            digits = exponent(t.currency)
            writer.writerow(
                [
                    neutralise(label),
                    t.currency,
                    "yes" if t.converted else "no",
                    t.count,
                    *(str(Decimal(v).scaleb(-digits)) for v in (t.best_case_minor, t.weighted_minor, t.commit_minor)),
                ]
            )
    return Response(
        buf.getvalue().encode("utf-8-sig"),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="forecast-{data.group_by}.csv"',
            "cache-control": "no-store",
        },
    )
