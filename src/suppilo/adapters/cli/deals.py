"""``suppilo deals`` / ``tasks`` / ``forecast``: the sales pipeline from the terminal, as Rich tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, emit_json, fail, resolve_workspace
from suppilo.deals import assignment, proposals, service
from suppilo.deals import forecast as deals_forecast
from suppilo.deals.models import Pipeline, PipelineStage
from suppilo.deals.schemas import (
    ActivityCreate,
    ActivityRead,
    AssignmentRead,
    AssignmentRuleRead,
    AssignmentRulesIn,
    DealContactIn,
    DealCreate,
    DealMove,
    DealRead,
    DealUpdate,
    ObjectionCreate,
    ObjectionRead,
    ProposalCreate,
    ProposalUpdate,
    SalesSettingsIn,
    SalesSettingsRead,
    StageChangeRead,
    TaskCreate,
    TaskRead,
    TeamIn,
)
from suppilo.errors import DomainError

deals_app = typer.Typer(help="Deals of the sales pipeline.", no_args_is_help=True)
tasks_app = typer.Typer(help="Follow-up tasks.", no_args_is_help=True)
out = Console()


def register(app: typer.Typer) -> None:
    """Add ``suppilo deals``, ``suppilo tasks``, ``suppilo sales`` and ``suppilo forecast`` to the root app."""
    app.add_typer(deals_app, name="deals")
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(sales_app, name="sales")
    app.command("forecast")(forecast)


def _domain_fail(exc: DomainError) -> None:
    fail(f"{exc.field + ': ' if exc.field else ''}{exc.message}")


def _pipeline_id(session: Any, workspace_id: int, pipeline: str | None) -> int | None:
    if pipeline is None:
        return None
    query = select(Pipeline).where(Pipeline.workspace_id == workspace_id)
    query = query.where(Pipeline.id == int(pipeline)) if pipeline.isdigit() else query.where(Pipeline.name == pipeline)
    found = session.scalar(query)
    if found is None:
        fail(f"no pipeline {pipeline!r} in this workspace")
    return int(found.id)


def _money(minor: int | None, currency: str | None) -> str:
    if minor is None:
        return "–"
    return f"{minor / 100:,.2f} {currency or ''}".strip()


@deals_app.command("list")
def list_deals(
    pipeline: str | None = typer.Option(None, "--pipeline", help="Pipeline id or name."),
    stage: str | None = typer.Option(None, "--stage", help="Stage key (needs a single pipeline or --pipeline)."),
    owner: int | None = typer.Option(None, "--owner", help="Owner user id."),
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Deals, newest first."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        pipeline_id = _pipeline_id(session, ws.id, pipeline)
        stage_ids: list[int] | None = None
        if stage is not None:
            q = select(PipelineStage).where(PipelineStage.workspace_id == ws.id, PipelineStage.key == stage)
            if pipeline_id is not None:
                q = q.where(PipelineStage.pipeline_id == pipeline_id)
            stage_ids = [s.id for s in session.scalars(q)]
            if not stage_ids:
                fail(f"no stage with key {stage!r}")
        with _failing():
            rows: list[Any] = []
            choices: list[int | None] = list(stage_ids) if stage_ids else [None]
            for sid in choices:
                items, _ = service.list_deals(
                    session, ws.id, pipeline_id=pipeline_id, stage_id=sid, owner_id=owner, limit=limit
                )
                rows.extend(items)
        rows.sort(key=lambda d: d.id, reverse=True)
        deals = [DealRead.model_validate(d).model_dump(mode="json") for d in rows[:limit]]
        stage_keys = {
            s.id: s.key for s in session.scalars(select(PipelineStage).where(PipelineStage.workspace_id == ws.id))
        }
    if as_json:
        emit_json(deals)
        return
    table = Table(title=f"Deals ({len(deals)})")
    for col in ("id", "name", "stage", "status", "amount", "owner", "close"):
        table.add_column(col)
    for d in deals:
        table.add_row(
            str(d["id"]),
            d["name"],
            stage_keys.get(d["stage_id"], str(d["stage_id"])),
            d["status"],
            _money(d.get("amount_minor"), d.get("currency")),
            str(d.get("owner_id") or "–"),
            str(d.get("expected_close_date") or "–"),
        )
    out.print(table)


@deals_app.command("move")
def move(
    deal_id: int = typer.Argument(..., help="Deal id."),
    stage_key: str = typer.Argument(..., help="Key of a stage of the deal's pipeline."),
    lost_reason: str | None = typer.Option(None, "--lost-reason", help="Required to move to a lost stage."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Move a deal to another stage of its pipeline."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            deal = service.get_deal(session, ws.id, deal_id)
            stage = session.scalar(
                select(PipelineStage).where(
                    PipelineStage.workspace_id == ws.id,
                    PipelineStage.pipeline_id == deal.pipeline_id,
                    PipelineStage.key == stage_key,
                )
            )
            if stage is None:
                fail(f"stage_key: the deal's pipeline has no stage {stage_key!r}")
                return
            deal = service.move_deal(
                session, ws.id, deal_id, DealMove(stage_id=stage.id, lost_reason=lost_reason), actor="cli"
            )
        data = DealRead.model_validate(deal).model_dump(mode="json")
    if as_json:
        emit_json(data)
    else:
        out.print(f"deal {deal_id} → {stage_key} ({data['status']})")


@tasks_app.command("list")
def list_tasks(
    overdue: bool = typer.Option(False, "--overdue", help="Only open tasks due before now."),
    owner: int | None = typer.Option(None, "--owner", help="Owner user id."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Tasks by due time."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        tasks = [
            TaskRead.model_validate(t).model_dump(mode="json")
            for t in service.list_tasks(session, ws.id, owner_id=owner, overdue=overdue)
        ]
    if as_json:
        emit_json(tasks)
        return
    table = Table(title=f"Tasks ({len(tasks)})")
    for col in ("id", "title", "kind", "due", "done", "deal", "owner"):
        table.add_column(col)
    for t in tasks:
        table.add_row(
            str(t["id"]),
            t["title"],
            t["kind"],
            t["due_at"],
            t["done_at"] or "–",
            str(t["deal_id"] or "–"),
            str(t["owner_id"] or "–"),
        )
    out.print(table)


def forecast(
    group_by: str = typer.Option("month", "--group-by", help="month, owner, stage, team, country or region."),
    stalls_by: str | None = typer.Option(
        None, "--stalls-by", help="Count stalled deals per owner, team, country or region (territory)."
    ),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Weighted pipeline, commit and best case of open deals in the workspace currency, and where deals stall."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            data = deals_forecast.workspace_forecast(session, ws.id, group_by=group_by, stalls_by=stalls_by).model_dump(
                mode="json"
            )
    if as_json:
        emit_json(data)
        return
    table = Table(title=f"Forecast by {data['group_by']} ({data['currency']})")
    for col in (data["group_by"], "currency", "deals", "best case", "weighted", "commit"):
        table.add_column(col)
    for g in data["groups"]:
        for t in g["totals"]:
            table.add_row(
                str(g["key"] or "–"),
                t["currency"] + (" *" if t["converted"] else ""),
                str(t["count"]),
                _money(t["best_case_minor"], None),
                _money(t["weighted_minor"], None),
                _money(t["commit_minor"], None),
            )
    out.print(table)
    _print_stalls(data)


def _print_stalls(data: dict[str, Any]) -> None:
    """Stalled deals per stage (and per group with ``--stalls-by``)."""
    by = data.get("stalls_by")
    stalls = Table(title="Stalled deals" + (f" by {by}" if by else ""))
    for col in ("stage", *([by] if by else []), "open", "stalled", "threshold (days)"):
        stalls.add_column(col)
    for s in data["stalls"]:
        threshold = "–" if s["threshold_days"] is None else f"{s['threshold_days']:g}"
        rows = s["groups"] if by else [s]
        for g in rows:
            key = [str(g["key"] if g["key"] is not None else "–")] if by else []
            stalls.add_row(s["stage_key"], *key, str(g["open_deals"]), str(g["stalled"]), threshold)
    out.print(stalls)
    if by and data.get("stall_totals"):
        totals = Table(title=f"Stalled deals per {by}, all stages")
        for col in (by, "open", "stalled"):
            totals.add_column(col)
        for g in data["stall_totals"]:
            totals.add_row(str(g["key"] if g["key"] is not None else "–"), str(g["open_deals"]), str(g["stalled"]))
        out.print(totals)


@tasks_app.command("handoffs")
def list_handoffs(
    status: str | None = typer.Option(None, "--status", help="open, overdue, met or late."),
    owner: int | None = typer.Option(None, "--owner", help="Owner user id."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Hand-off tasks (automatic owner assignments) with their response status and measured response time."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            rows = assignment.list_handoffs(session, ws.id, status=status, owner_id=owner)
        data: list[dict[str, Any]] = [
            {
                "task": TaskRead.model_validate(task).model_dump(mode="json"),
                "status": state,
                "response_seconds": None if elapsed is None else int(elapsed.total_seconds()),
                "response_working_seconds": None if working is None else int(working.total_seconds()),
            }
            for task, state, elapsed, working in rows
        ]
    if as_json:
        emit_json(data)
        return
    table = Table(title=f"Hand-offs ({len(data)})")
    for col in ("task", "title", "owner", "due", "status", "response (working h)"):
        table.add_column(col)
    for h in data:
        working = h["response_working_seconds"]
        table.add_row(
            str(h["task"]["id"]),
            h["task"]["title"],
            str(h["task"]["owner_id"] or "–"),
            h["task"]["due_at"],
            h["status"],
            "–" if working is None else f"{working / 3600:.1f}",
        )
    out.print(table)


@deals_app.command("assign")
def assign(
    deal_id: int | None = typer.Option(None, "--deal", help="Deal id."),
    contact_id: int | None = typer.Option(None, "--contact", help="Contact id."),
    force: bool = typer.Option(False, "--force", help="Reassign even if it has an owner."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Give a deal or a contact an owner by the workspace's assignment rules (with a first-contact task)."""
    from suppilo.contacts import service as contacts_service

    if (deal_id is None) == (contact_id is None):
        fail("give --deal or --contact")
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            if contact_id is not None:
                contact = contacts_service.get_contact(session, ws.id, contact_id)
                row = assignment.assign_contact(session, ws.id, contact, trigger="cli", actor="cli", force=force)
            else:
                deal = service.get_deal(session, ws.id, deal_id or 0, lock=True)
                row = assignment.assign_deal(session, ws.id, deal, trigger="cli", actor="cli", force=force)
        if row is None:
            fail("it has an owner (use --force) or no assignment rule matches")
            return
        data = AssignmentRead.model_validate(row).model_dump(mode="json")
    if as_json:
        emit_json(data)
    else:
        out.print(f"{data['subject_type']} {data['subject_id']} → user {data['user_id']} (rule {data['rule_name']!r})")


sales_app = typer.Typer(help="Sales setup: hand-off settings, teams, assignment rules.", no_args_is_help=True)


def _settings_data(row: Any) -> dict[str, Any]:
    return SalesSettingsRead.model_validate(row).model_dump(mode="json")


@sales_app.command("settings")
def sales_settings(
    stage: str | None = typer.Option(
        None, "--stage", help="Lifecycle stage that triggers assignment ('' turns it off)."
    ),
    response_hours: int | None = typer.Option(None, "--response-hours", min=0, help="Working hours to the hand-off."),
    working_hours: str | None = typer.Option(None, "--working-hours", help='JSON, e.g. {"weekdays":[1,2,3,4,5]}.'),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show the hand-off settings, or change the ones given."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        row = assignment.get_settings(session, ws.id)
        if stage is not None or response_hours is not None or working_hours is not None:
            try:
                hours = json.loads(working_hours) if working_hours is not None else row.working_hours
                data = SalesSettingsIn(
                    assign_on_stage=(stage or None) if stage is not None else row.assign_on_stage,
                    response_hours=row.response_hours if response_hours is None else response_hours,
                    handoff_task_title=row.handoff_task_title,
                    working_hours=hours,
                )
                row = assignment.put_settings(session, ws.id, data)
            except DomainError as exc:
                _domain_fail(exc)
                return
            except (ValueError, ValidationError) as exc:
                fail(f"working_hours: {exc}")
                return
        data_out = _settings_data(row)
    if as_json:
        emit_json(data_out)
    else:
        for key, value in data_out.items():
            out.print(f"{key}: {value}")


@sales_app.command("team")
def sales_team(
    name: str = typer.Argument(..., help="Team name (created or updated)."),
    member: list[int] = typer.Option([], "--member", help="User id; repeat for each member."),
    inactive: list[int] = typer.Option([], "--inactive", help="A member who gets no new leads."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a team or replace its members."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            data = TeamIn(name=name, members=member, inactive=inactive)
            existing = next((t for t in assignment.list_teams(session, ws.id) if t.name == name), None)
            team = (
                assignment.create_team(session, ws.id, data)
                if existing is None
                else assignment.update_team(session, ws.id, existing.id, data)
            )
        members = assignment.team_members(session, ws.id, [team.id])[team.id]
        result: dict[str, Any] = {
            "id": team.id,
            "name": team.name,
            "members": [{"user_id": m.user_id, "active": m.active} for m in members],
        }
    if as_json:
        emit_json(result)
    else:
        out.print(f"team {result['id']} {result['name']}: {len(result['members'])} member(s)")


@sales_app.command("rules")
def sales_rules(
    file: str | None = typer.Option(None, "--file", help='Replace the rules with a JSON file: {"rules": [...]}.'),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show the assignment rules in order, or replace them from a file."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        try:
            if file is not None:
                with open(file, encoding="utf-8") as fh:
                    data = AssignmentRulesIn.model_validate(json.load(fh))
                rows = assignment.replace_rules(session, ws.id, data.rules)
            else:
                rows = assignment.list_rules(session, ws.id)
        except DomainError as exc:
            _domain_fail(exc)
            return
        except (OSError, ValueError, ValidationError) as exc:
            fail(f"{file}: {exc}")
            return
        rules = [AssignmentRuleRead.model_validate(r).model_dump(mode="json") for r in rows]
    if as_json:
        emit_json(rules)
        return
    table = Table(title=f"Assignment rules ({len(rules)})")
    for col in ("#", "name", "conditions", "target", "distribution", "active"):
        table.add_column(col)
    for r in rules:
        target = f"user {r['user_id']}" if r["user_id"] is not None else f"team {r['team_id']}"
        table.add_row(
            str(r["position"]), r["name"], json.dumps(r["conditions"]), target, r["distribution"], str(r["active"])
        )
    out.print(table)


# --- the rest of the pipeline from the terminal: pipelines, creating and qualifying deals, objections, activities,
# tasks and proposals (the same service calls as the API) ---------------------------------------------------------


@contextmanager
def _failing() -> Iterator[None]:
    """A refused request ends the command with its error: the field and the reason, exit status 1."""
    try:
        yield
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
    except DomainError as exc:
        _domain_fail(exc)


def _emit(data: Any, as_json: bool, line: str) -> None:
    if as_json:
        emit_json(data)
    else:
        out.print(line)


@deals_app.command("pipelines")
def list_pipelines(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Pipelines with their stages (key, probability, kind) in order."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        pipelines = service.list_pipelines(session, ws.id)
        stages = service.pipeline_stages(session, ws.id, [p.id for p in pipelines])
        data: list[dict[str, Any]] = [
            {
                "id": p.id,
                "name": p.name,
                "is_default": p.is_default,
                "requires_amount_to_win": p.requires_amount_to_win,
                "stages": [
                    {"id": s.id, "key": s.key, "label": s.label, "probability": s.probability, "kind": s.kind}
                    for s in stages[p.id]
                ],
            }
            for p in pipelines
        ]
    if as_json:
        emit_json(data)
        return
    for p in data:
        stage_text = " → ".join(f"{s['key']} {s['probability']}%" for s in p["stages"])
        out.print(f"{p['id']} {p['name']}{' (default)' if p['is_default'] else ''}: {stage_text}")


@deals_app.command("create")
def create(
    name: str = typer.Argument(..., help="Deal name."),
    contact: int | None = typer.Option(None, "--contact", help="Contact id."),
    company: int | None = typer.Option(None, "--company", help="Company id."),
    owner: int | None = typer.Option(None, "--owner", help="Owner user id (default: the contact's, else the rules)."),
    amount: int | None = typer.Option(None, "--amount", help="Amount in minor units (cents)."),
    currency: str | None = typer.Option(None, "--currency", help="ISO 4217 code (default: the workspace's)."),
    close: str | None = typer.Option(None, "--close", help="Expected close date, YYYY-MM-DD."),
    source: str | None = typer.Option(None, "--source", help="Source channel."),
    pipeline: str | None = typer.Option(None, "--pipeline", help="Pipeline id or name (default: the default one)."),
    stage: str | None = typer.Option(None, "--stage", help="Open stage key (default: the first)."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Open a deal (its contact moves to decision)."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        pipeline_id = _pipeline_id(session, ws.id, pipeline)
        stage_id = None
        if stage is not None:
            pid = pipeline_id or service.list_pipelines(session, ws.id)[0].id
            found = session.scalar(
                select(PipelineStage).where(
                    PipelineStage.workspace_id == ws.id, PipelineStage.pipeline_id == pid, PipelineStage.key == stage
                )
            )
            if found is None:
                fail(f"stage: the pipeline has no stage {stage!r}")
                return
            stage_id = found.id
        with _failing():
            body = DealCreate.model_validate(
                {
                    "name": name,
                    "pipeline_id": pipeline_id,
                    "stage_id": stage_id,
                    "contact_id": contact,
                    "company_id": company,
                    "owner_id": owner,
                    "amount_minor": amount,
                    "currency": currency.upper() if currency else None,
                    "expected_close_date": close,
                    "source_channel": source,
                }
            )
            deal = service.create_deal(session, ws.id, body, actor="cli")
        data = DealRead.model_validate(deal).model_dump(mode="json")
    _emit(data, as_json, f"deal {data['id']} opened: {data['name']}")


@deals_app.command("qualify")
def qualify(
    deal_id: int = typer.Argument(..., help="Deal id."),
    version: int | None = typer.Option(None, "--version", help="The version last read (refused if it changed)."),
    budget: int | None = typer.Option(None, "--budget", help="Budget in minor units."),
    budget_currency: str | None = typer.Option(None, "--budget-currency", help="ISO 4217 code of the budget."),
    authority: str | None = typer.Option(None, "--authority", help="Who decides."),
    decision_maker: bool | None = typer.Option(None, "--decision-maker/--not-decision-maker"),
    need: str | None = typer.Option(None, "--need"),
    timeline: str | None = typer.Option(None, "--timeline"),
    status: str | None = typer.Option(None, "--status", help="unqualified, qualified or disqualified."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Set a deal's BANT fields and qualification status (only the options given change)."""
    given = {
        "budget_minor": budget,
        "budget_currency": budget_currency.upper() if budget_currency else None,
        "authority": authority,
        "decision_maker": decision_maker,
        "need": need,
        "timeline": timeline,
        "qualification_status": status,
    }
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            current = service.get_deal(session, ws.id, deal_id)
            body = DealUpdate.model_validate(
                {"version": version or current.version, **{k: v for k, v in given.items() if v is not None}}
            )
            deal = service.update_deal(session, ws.id, deal_id, body)
        data = DealRead.model_validate(deal).model_dump(mode="json")
    _emit(data, as_json, f"deal {deal_id}: {data['qualification_status']} (version {data['version']})")


@deals_app.command("show")
def show(
    deal_id: int = typer.Argument(..., help="Deal id."), workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt
) -> None:
    """A deal with its stage history, objections, tasks, activities and proposals."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            deal = service.get_deal(session, ws.id, deal_id)
        keys = {s.id: s.key for s in session.scalars(select(PipelineStage).where(PipelineStage.workspace_id == ws.id))}
        data = DealRead.model_validate(deal).model_dump(mode="json")
        data["stage_key"] = keys.get(deal.stage_id)
        data["contacts"] = [c.model_dump(mode="json") for c in service.deal_contacts(session, ws.id, deal_id)]
        data["history"] = [
            {**StageChangeRead.model_validate(c).model_dump(mode="json"), "to": keys.get(c.to_stage_id)}
            for c in service.stage_history(session, ws.id, deal_id)
        ]
        data["objections"] = [
            ObjectionRead.model_validate(o).model_dump(mode="json")
            for o in service.list_objections(session, ws.id, deal_id)
        ]
        data["tasks"] = [
            TaskRead.model_validate(t).model_dump(mode="json")
            for t in service.list_tasks(session, ws.id, deal_id=deal_id)
        ]
        data["activities"] = [
            ActivityRead.model_validate(a).model_dump(mode="json")
            for a in service.list_activities(session, ws.id, deal_id=deal_id)
        ]
        data["proposals"] = [
            proposals.read(session, p).model_dump(mode="json")
            for p in proposals.list_proposals(session, ws.id, deal_id)
        ]
    if as_json:
        emit_json(data)
        return
    out.print(
        f"[bold]{data['name']}[/bold] · {data['stage_key']} ({data['status']}) · "
        f"{_money(data['amount_minor'], data['currency'])} · owner {data['owner_id'] or '–'} · "
        f"{data['qualification_status']}"
    )
    for c in data["contacts"]:
        out.print(f"  contact {c['contact_id']}: {c['name']} ({'primary' if c['primary'] else c['role'] or '–'})")
    for h in data["history"]:
        out.print(f"  {h['changed_at']} → {h['to']} {h['reason']}".rstrip())
    for o in data["objections"]:
        out.print(f"  objection: {o['text']}" + (f" — {o['response']}" if o["response"] else ""))
    for t in data["tasks"]:
        out.print(f"  task {t['id']}: {t['title']} due {t['due_at']}{' (done)' if t['done_at'] else ''}")
    for p in data["proposals"]:
        out.print(f"  proposal {p['id']}: {p['title']} {p['status']} {_money(p['total_minor'], p['currency'])}")


@deals_app.command("contact")
def deal_contact(
    deal_id: int = typer.Argument(..., help="Deal id."),
    contact_id: int = typer.Argument(..., help="Contact id."),
    role: str | None = typer.Option(None, "--role", help="E.g. decision maker, champion, user."),
    remove: bool = typer.Option(False, "--remove", help="Take the contact off the deal."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Add a contact to a deal's buying group (or change its role, or remove it)."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            if remove:
                service.remove_deal_contact(session, ws.id, deal_id, contact_id)
            else:
                service.add_deal_contact(
                    session, ws.id, deal_id, DealContactIn.model_validate({"contact_id": contact_id, "role": role})
                )
            data = [c.model_dump(mode="json") for c in service.deal_contacts(session, ws.id, deal_id)]
    names = ", ".join(f"{c['name']}{' (' + c['role'] + ')' if c['role'] else ''}" for c in data)
    _emit(data, as_json, f"deal {deal_id}: {names or 'no contacts'}")


@deals_app.command("objection")
def objection(
    deal_id: int = typer.Argument(..., help="Deal id."),
    text: str = typer.Argument(..., help="What the prospect objected."),
    response: str | None = typer.Option(None, "--response", help="How it was answered."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Log an objection on a deal."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            row = service.add_objection(
                session, ws.id, deal_id, ObjectionCreate.model_validate({"text": text, "response": response})
            )
        data = ObjectionRead.model_validate(row).model_dump(mode="json")
    _emit(data, as_json, f"objection {data['id']} logged on deal {deal_id}")


@deals_app.command("activity")
def activity(
    deal_id: int = typer.Argument(..., help="Deal id."),
    kind: str = typer.Argument(..., help="call, meeting, email or note."),
    body: str = typer.Argument("", help="What happened."),
    owner: int | None = typer.Option(None, "--owner", help="User id who did it."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Log a call, meeting, email or note on a deal."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            row = service.create_activity(
                session,
                ws.id,
                ActivityCreate.model_validate({"kind": kind, "body": body, "deal_id": deal_id, "owner_id": owner}),
            )
        data = ActivityRead.model_validate(row).model_dump(mode="json")
    _emit(data, as_json, f"{kind} logged on deal {deal_id}")


@tasks_app.command("add")
def add_task(
    title: str = typer.Argument(..., help="What to do."),
    due: str | None = typer.Option(None, "--due", help="Due time, ISO 8601 with a zone (not in the past)."),
    due_in_hours: float | None = typer.Option(
        None, "--due-in-working-hours", help="Due this many working hours of the owner from now."
    ),
    reminder: str | None = typer.Option(None, "--reminder", help="Mail the owner at this time (ISO 8601)."),
    kind: str = typer.Option("todo", "--kind", help="call, meeting, email or todo."),
    deal: int | None = typer.Option(None, "--deal", help="Deal id."),
    contact: int | None = typer.Option(None, "--contact", help="Contact id (default: the deal's)."),
    owner: int | None = typer.Option(None, "--owner", help="Owner user id."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a follow-up task."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            body = TaskCreate.model_validate(
                {
                    "title": title,
                    "kind": kind,
                    "due_at": due,
                    "due_in_working_hours": due_in_hours,
                    "reminder_at": reminder,
                    "deal_id": deal,
                    "contact_id": contact,
                    "owner_id": owner,
                }
            )
            task = service.create_task(session, ws.id, body)
        data = TaskRead.model_validate(task).model_dump(mode="json")
    _emit(data, as_json, f"task {data['id']} due {data['due_at']}")


@tasks_app.command("complete")
def complete_task(
    task_id: int = typer.Argument(..., help="Task id."), workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt
) -> None:
    """Mark a task done."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            task = service.complete_task(session, ws.id, task_id)
        data = TaskRead.model_validate(task).model_dump(mode="json")
    _emit(data, as_json, f"task {task_id} done at {data['done_at']}")


@deals_app.command("propose")
def propose(
    deal_id: int = typer.Argument(..., help="Deal id."),
    title: str = typer.Option(..., "--title"),
    valid_until: str = typer.Option(..., "--valid-until", help="YYYY-MM-DD, in the future."),
    line: list[str] = typer.Option(..., "--line", help="SKU:QUANTITY from the catalogue; repeatable."),
    discount_bp: int | None = typer.Option(None, "--discount-bp", help="Discount in basis points (1000 = 10 %)."),
    discount: int | None = typer.Option(None, "--discount", help="Fixed discount in minor units."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A draft proposal on a deal with catalogue lines; totals are computed."""
    lines = []
    for i, item in enumerate(line):
        sku, _, qty = item.rpartition(":")
        if not sku or not qty.isdigit():
            fail(f"line.{i}: {item!r} is not SKU:QUANTITY")
        lines.append({"sku": sku, "quantity": int(qty)})
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            body = ProposalCreate.model_validate(
                {
                    "title": title,
                    "valid_until": valid_until,
                    "discount_bp": discount_bp,
                    "discount_minor": discount,
                    "lines": lines,
                }
            )
            row = proposals.create_proposal(session, ws.id, deal_id, body)
            data = proposals.read(session, row).model_dump(mode="json")
    _emit(data, as_json, f"proposal {data['id']}: total {_money(data['total_minor'], data['currency'])}")


@deals_app.command("proposal")
def proposal_action(
    proposal_id: int = typer.Argument(..., help="Proposal id."),
    action: str = typer.Argument(..., help="send, accept or reject."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Mark a proposal sent, accept it (the deal's amount becomes its total) or reject it."""
    if action not in ("send", "accept", "reject"):
        fail("action: give send, accept or reject")
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        with _failing():
            if action == "send":
                row = proposals.update_proposal(session, ws.id, proposal_id, ProposalUpdate(status="sent"))
            elif action == "accept":
                row = proposals.accept_proposal(session, ws.id, proposal_id)
            else:
                row = proposals.reject_proposal(session, ws.id, proposal_id)
            data = proposals.read(session, row).model_dump(mode="json")
    _emit(data, as_json, f"proposal {proposal_id}: {data['status']}")
