"""Journeys: the list with live numbers (htmx polls it), a journey page with its flow and per-step counts, the
holdout lift, enable / pause / archive, a validated YAML editor that saves a new version, the versions, the
playbook gallery and enrollment timelines. Everything comes from ``suppilo.journeys.service`` and ``playbooks``.

Everyone may read journeys; only admins and marketers change them."""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from suppilo.adapters.http.deps import DbSession, ReadSession
from suppilo.adapters.web import csrf
from suppilo.adapters.web.auth import Ctx, WebError, Workspace_
from suppilo.adapters.web.errors import error_text
from suppilo.adapters.web.templating import render
from suppilo.contacts.models import Contact
from suppilo.engine import journey as jengine
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.journeys import playbooks
from suppilo.journeys import service as journeys_service
from suppilo.journeys.models import Journey

router = APIRouter()
MANAGERS = frozenset({"admin", "marketer"})
ENROLLMENT_PAGE = 50
EDITOR_MAX = 200_000
STUCK_SHOWN = 50


def N_(text: str) -> str:
    """Marks a text for the catalogues; the template translates it."""
    return text


# Labels of the playbooks' settings (names as the playbook functions read them).
SETTING_LABELS = {
    "event": N_("Trigger event"),
    "tips_after_days": N_("Tips after (days)"),
    "interest": N_("Interest"),
    "stage": N_("Lifecycle stage that starts it"),
    "response_hours": N_("Response time (hours)"),
    "onboarding_after_days": N_("Onboarding tips after (days)"),
    "after_days": N_("Suggestions after (days)"),
    "first_after_hours": N_("First reminder after (hours)"),
    "holdout_percent": N_("Holdout (%)"),
    "offer": N_("Coupon offer key"),
}
# The gallery's texts of each playbook (the service's English names, translated here).
PLAYBOOK_TEXTS = {
    "welcome_series": (N_("Welcome series"), N_("Welcomes a new sign-up at once, then shares tips a few days later.")),
    "lead_nurture": (N_("Lead nurture by interest"), N_("Two helpful mails a week apart to interested leads.")),
    "sales_handoff": (
        N_("Hand-off to sales"),
        N_("A call task for the owner and a note to the lead when it qualifies."),
    ),
    "thank_you_onboarding": (N_("Thank-you and onboarding"), N_("Thanks for the first order, onboarding tips later.")),
    "cross_sell": (N_("Cross-sell"), N_("Products often bought together, two weeks after an order.")),
    "abandoned_cart": (N_("Abandoned-cart reminder"), N_("Two reminders of a cart left behind.")),
    "win_back": (N_("Win-back"), N_("A coupon tiered by lifetime value for customers who stopped buying.")),
    "promoter_advocacy": (N_("Reviews and referrals"), N_("Review and referral requests to promoters (NPS 9-10).")),
}
STATUS_LABELS = {
    "draft": N_("Draft"),
    "active": N_("Active"),
    "paused": N_("Paused"),
    "archived": N_("Archived"),
}
STEP_LABELS = {
    "send_email": N_("Send email"),
    "wait": N_("Wait"),
    "wait_until": N_("Wait until"),
    "wait_for_event": N_("Wait for event"),
    "branch": N_("Branch"),
    "split": N_("Split"),
    "update_contact": N_("Update contact"),
    "create_task": N_("Create task"),
    "webhook": N_("Webhook"),
    "list": N_("List"),
    "coupon": N_("Coupon"),
    "end": N_("End"),
}
TRIGGER_LABELS = {
    "event": N_("Event"),
    "segment_entered": N_("Segment entered"),
    "segment_exited": N_("Segment exited"),
    "stage_changed": N_("Stage changed"),
    "date_property": N_("Date property"),
    "schedule": N_("Schedule"),
    "manual": N_("Manual"),
}
NEW_JOURNEY = """\
name: My journey
trigger: {type: event, event: Form Submitted}
entry: {reentry: never}
goal: {event: Order Completed, window_days: 30}
start: welcome
steps:
  welcome: {type: send_email, template: welcome, next: pause}
  pause: {type: wait, duration: {days: 3}, next: tips}
  tips: {type: send_email, template: nurture_interest}
"""


def _manage(ctx: Ctx) -> None:
    ctx.require("view")
    if ctx.role not in MANAGERS:
        raise WebError(403, "forbidden")


def _actor(ctx: Ctx) -> str:
    return f"user:{ctx.user.info.user_id} ({ctx.user.info.email})"


def _journey_or_404(session: Any, workspace_id: int, journey_id: int) -> Journey:
    try:
        return journeys_service.get_journey(session, workspace_id, journey_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc


def _page(request: Request, ctx: Ctx, template: str, status_code: int = 200, **context: Any) -> Response:
    return render(
        request,
        template,
        language=ctx.language,
        timezone=ctx.timezone,
        status_code=status_code,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        can_manage=ctx.role in MANAGERS,
        status_labels=STATUS_LABELS,
        step_labels=STEP_LABELS,
        trigger_labels=TRIGGER_LABELS,
        **context,
    )


def _trigger_text(defn: jengine.Definition) -> str:
    """The detail of a trigger (event name, stage, segment, property), as stored values (shown as text)."""
    trig = defn.trigger
    if isinstance(trig, jengine.EventTrigger):
        return trig.event
    if isinstance(trig, jengine.StageTrigger):
        return (f"{trig.from_} → " if trig.from_ else "→ ") + (trig.to or "*")
    if isinstance(trig, jengine.SegmentTrigger):
        return f"#{trig.segment_id}"
    if isinstance(trig, jengine.DateTrigger):
        return trig.property
    if isinstance(trig, jengine.ScheduleTrigger):
        return f"{trig.every} {trig.at}"
    return ""


def _rows(session: Any, workspace_id: int) -> list[dict[str, Any]]:
    rows = []
    for journey in journeys_service.list_journeys(session, workspace_id):
        rep = journeys_service.report(session, workspace_id, journey.id)
        defn = journeys_service.current_definition(session, journey)
        rows.append({"journey": journey, "report": rep, "trigger": _trigger_text(defn)})
    return rows


@router.get("/w/{slug}/journeys")
def journeys(request: Request, ctx: Workspace_, session: ReadSession, done: str = "") -> Response:
    ctx.require("view")
    rows = _rows(session, ctx.workspace_id)
    stuck = journeys_service.stuck(session, ctx.workspace_id)[:STUCK_SHOWN]
    return _page(
        request,
        ctx,
        "journeys.html",
        active="journeys",
        rows=rows,
        names={row["journey"].id: row["journey"].name for row in rows},
        stuck=stuck,
        done=done,
    )


# --- playbooks ------------------------------------------------------------------------------------------------------


class _Recorder(dict[str, Any]):
    """Settings that remember which names a playbook reads and with what default."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.setdefault(key, default)
        return default


def playbook_settings(key: str) -> dict[str, Any]:
    """The settings a playbook reads, with their defaults (read from the playbook itself)."""
    recorder = _Recorder()
    playbooks.get_playbook(key).build(recorder)
    return recorder.seen


def _gallery(
    request: Request,
    ctx: Ctx,
    session: Any,
    *,
    status_code: int = 200,
    failed: str = "",
    typed: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    enabled: dict[str, list[Journey]] = {}
    for journey in journeys_service.list_journeys(session, ctx.workspace_id):
        if journey.playbook:
            enabled.setdefault(journey.playbook, []).append(journey)
    cards = []
    for key, playbook in playbooks.PLAYBOOKS.items():
        name, description = PLAYBOOK_TEXTS.get(key, (playbook.name, playbook.description))
        settings = [
            {
                "name": setting,
                "label": SETTING_LABELS.get(setting, setting),
                "number": isinstance(default, int),
                "default": default,
                "value": (typed or {}).get(setting, "") if key == failed else "",
                "error": (errors or {}).get(setting, "") if key == failed else "",
            }
            for setting, default in playbook_settings(key).items()
        ]
        cards.append(
            {
                "key": key,
                "name": name,
                "description": description,
                "settings": settings,
                "enabled": enabled.get(key, []),
                "error": (errors or {}).get("", "") if key == failed else "",
            }
        )
    return _page(request, ctx, "journeys_playbooks.html", status_code=status_code, active="journeys", cards=cards)


@router.get("/w/{slug}/journeys/playbooks")
def gallery(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    ctx.require("view")
    return _gallery(request, ctx, session)


@router.post("/w/{slug}/journeys/playbooks/{key}")
async def enable_playbook(request: Request, ctx: Workspace_, session: DbSession, key: str) -> Response:
    """Enable a playbook with the settings filled in (empty fields keep the playbook's defaults)."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _manage(ctx)
    if key not in playbooks.PLAYBOOKS:
        raise WebError(404, "not_found")
    form = await request.form()
    defaults = playbook_settings(key)
    typed: dict[str, str] = {}
    settings: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, default in defaults.items():
        raw = form.get(f"setting_{name}")
        text = raw.strip()[:200] if isinstance(raw, str) else ""
        typed[name] = text
        if not text:
            continue
        if isinstance(default, int):
            try:
                settings[name] = int(text)
            except ValueError:
                errors[name] = N_("a whole number is needed")
                continue
        else:
            settings[name] = text
    activate = form.get("activate") != "draft"
    if not errors:
        try:
            journey = playbooks.enable(session, ctx.workspace_id, key, settings, activate=activate, actor=_actor(ctx))
        except DomainError as exc:
            field = exc.field.removeprefix("settings.")
            errors[field if field in defaults else ""] = error_text(exc, ctx.language)
        else:
            return RedirectResponse(f"{ctx.base}/journeys/{journey.id}?done=enabled", status_code=303)
    session.rollback()
    return _gallery(request, ctx, session, status_code=422, failed=key, typed=typed, errors=errors)


# --- one journey ----------------------------------------------------------------------------------------------------


def walk_order(defn: jengine.Definition) -> list[str]:
    """Step ids in the order a contact meets them (breadth first from ``start``), then any others."""
    order: list[str] = []
    queue = [defn.start]
    while queue:
        sid = queue.pop(0)
        if sid in order or sid not in defn.steps:
            continue
        order.append(sid)
        queue.extend(t for _, t in jengine.successors(defn.steps[sid]) if t is not None)
    return order + [sid for sid in defn.steps if sid not in order]


def _flow(defn: jengine.Definition, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps in definition order with where each leads and its counts (the diagram, as a list)."""
    counts = {s["step"]: s for s in report["steps"]}
    incoming: dict[str, list[str]] = {}
    for sid, step in defn.steps.items():
        for _, target in jengine.successors(step):
            if target is not None:
                incoming.setdefault(target, []).append(sid)
    flow = []
    for sid in walk_order(defn):
        step = defn.steps[sid]
        exits = []
        for where, target in jengine.successors(step):
            label = ""
            if isinstance(step, jengine.Branch):
                label = "else" if where == "else" else f"arm {int(where[5 : where.index(']')]) + 1}"
            elif isinstance(step, jengine.Split):
                label = step.variants[int(where[9 : where.index("]")])].name
            elif where.startswith("timeout_next"):
                label = "timeout"
            elif where.startswith("on_error"):
                label = "error"
            exits.append({"label": label, "target": target})
        flow.append(
            {
                "id": sid,
                "type": step.type,
                "detail": _step_detail(step),
                "exits": exits,
                "incoming": incoming.get(sid, []),
                "start": sid == defn.start,
                "counts": counts.get(sid, {"waiting": 0, "passed": 0, "outcomes": {}}),
            }
        )
    return flow


def _step_detail(step: Any) -> str:
    """What a step does, in the definition's own terms (template keys, durations, titles)."""
    if isinstance(step, jengine.SendEmail):
        return step.template
    if isinstance(step, jengine.Wait):
        d = step.duration
        return " ".join(f"{n} {u}" for n, u in ((d.days, "d"), (d.hours, "h"), (d.minutes, "min")) if n)
    if isinstance(step, jengine.WaitUntil):
        return step.time + (f" ({', '.join(map(str, step.weekdays))})" if step.weekdays else "")
    if isinstance(step, jengine.WaitForEvent):
        return step.event
    if isinstance(step, jengine.Split) and step.holdout_percent:
        return f"holdout {step.holdout_percent:g}%"
    if isinstance(step, jengine.CreateTask):
        return step.title
    if isinstance(step, jengine.ListChange):
        return f"{step.action} #{step.list_id}"
    if isinstance(step, jengine.IssueCoupon):
        return step.offer
    if isinstance(step, jengine.CallWebhook):
        return step.url
    return ""


@router.get("/w/{slug}/journeys/{journey_id}")
def journey_page(request: Request, ctx: Workspace_, session: ReadSession, journey_id: int, done: str = "") -> Response:
    ctx.require("view")
    journey = _journey_or_404(session, ctx.workspace_id, journey_id)
    defn = journeys_service.current_definition(session, journey)
    rep = journeys_service.report(session, ctx.workspace_id, journey.id)
    order = walk_order(defn)
    return _page(
        request,
        ctx,
        "journeys_detail.html",
        active="journeys",
        journey=journey,
        defn=defn,
        trigger=_trigger_text(defn),
        report=rep,
        step_rows=sorted(rep["steps"], key=lambda row: order.index(row["step"])),
        flow=_flow(defn, rep),
        lift=rep["conversion"]["lift"],
        versions=list(reversed(journeys_service.versions(session, ctx.workspace_id, journey.id))),
        mermaid=journeys_service.diagram(session, ctx.workspace_id, journey.id),
        done=done,
    )


@router.post("/w/{slug}/journeys/{journey_id}/status")
async def change_status(
    request: Request,
    ctx: Workspace_,
    session: DbSession,
    journey_id: int,
    status: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _manage(ctx)
    journey = _journey_or_404(session, ctx.workspace_id, journey_id)
    try:
        journeys_service.set_status(session, ctx.workspace_id, journey.id, status)
    except Conflict as exc:
        raise WebError(409, error_text(exc, ctx.language)) from exc
    except DomainError as exc:
        raise WebError(422, error_text(exc, ctx.language)) from exc
    return RedirectResponse(f"{ctx.base}/journeys/{journey.id}?done={status}", status_code=303)


def _dump(definition: dict[str, Any]) -> str:
    # without a stream, safe_dump returns the text (its stubs say Any)
    text: str = yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, width=110)
    return text


def _editor(
    request: Request,
    ctx: Ctx,
    *,
    journey: Journey | None,
    text: str,
    error: DomainError | None = None,
    status_code: int = 200,
    from_version: int | None = None,
) -> Response:
    return _page(
        request,
        ctx,
        "journeys_edit.html",
        status_code=status_code,
        active="journeys",
        journey=journey,
        text=text,
        error_path=error.field if error else "",
        error_message=error_text(error, ctx.language) if error else "",
        from_version=from_version,
    )


def _parse(text: str) -> object:
    if len(text) > EDITOR_MAX:
        raise DomainError("definition", f"the definition is longer than {EDITOR_MAX} characters", code="too_long")
    return journeys_service.load_document(text)


@router.get("/w/{slug}/journeys/new/edit")
def new_journey(request: Request, ctx: Workspace_) -> Response:
    _manage(ctx)
    return _editor(request, ctx, journey=None, text=NEW_JOURNEY)


@router.post("/w/{slug}/journeys/new/edit")
async def create_journey(
    request: Request, ctx: Workspace_, session: DbSession, definition: Annotated[str, Form()] = ""
) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _manage(ctx)
    try:
        journey = journeys_service.create_journey(session, ctx.workspace_id, _parse(definition), actor=_actor(ctx))
    except DomainError as exc:
        session.rollback()
        return _editor(request, ctx, journey=None, text=definition, error=exc, status_code=422)
    return RedirectResponse(f"{ctx.base}/journeys/{journey.id}?done=created", status_code=303)


@router.get("/w/{slug}/journeys/{journey_id}/edit")
def edit_journey(
    request: Request, ctx: Workspace_, session: ReadSession, journey_id: int, version: int | None = None
) -> Response:
    _manage(ctx)
    journey = _journey_or_404(session, ctx.workspace_id, journey_id)
    chosen = next(
        (v for v in journeys_service.versions(session, ctx.workspace_id, journey.id) if v.version == version), None
    )
    if version is not None and chosen is None:
        raise WebError(404, "not_found")
    definition = (
        chosen.definition if chosen else jengine.definition_json(journeys_service.current_definition(session, journey))
    )
    return _editor(request, ctx, journey=journey, text=_dump(definition), from_version=version)


@router.post("/w/{slug}/journeys/{journey_id}/edit")
async def save_journey(
    request: Request,
    ctx: Workspace_,
    session: DbSession,
    journey_id: int,
    definition: Annotated[str, Form()] = "",
) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _manage(ctx)
    journey = _journey_or_404(session, ctx.workspace_id, journey_id)
    try:
        journeys_service.update_definition(session, ctx.workspace_id, journey.id, _parse(definition), actor=_actor(ctx))
    except DomainError as exc:
        session.rollback()
        journey = _journey_or_404(session, ctx.workspace_id, journey_id)
        return _editor(request, ctx, journey=journey, text=definition, error=exc, status_code=422)
    return RedirectResponse(f"{ctx.base}/journeys/{journey.id}?done=saved", status_code=303)


# --- enrollments ----------------------------------------------------------------------------------------------------


def _names(session: Any, workspace_id: int, contact_ids: list[int]) -> dict[int, str]:
    if not contact_ids:
        return {}
    rows = session.execute(
        select(Contact.id, Contact.first_name, Contact.last_name, Contact.email).where(
            Contact.workspace_id == workspace_id, Contact.id.in_(sorted(set(contact_ids)))
        )
    )
    return {cid: " ".join(p for p in (first, last) if p) or email or f"#{cid}" for cid, first, last, email in rows}


@router.get("/w/{slug}/journeys/{journey_id}/enrollments")
def enrollments(
    request: Request,
    ctx: Workspace_,
    session: ReadSession,
    journey_id: int,
    status: str = "",
    after: int = 0,
) -> Response:
    ctx.require("view")
    journey = _journey_or_404(session, ctx.workspace_id, journey_id)
    chosen = status if status in ("active", "ended") else None
    items = journeys_service.list_enrollments(
        session, ctx.workspace_id, journey_id=journey.id, status=chosen, after_id=max(after, 0),
        limit=ENROLLMENT_PAGE + 1,
    )  # fmt: skip
    next_after = items[ENROLLMENT_PAGE - 1].id if len(items) > ENROLLMENT_PAGE else None
    items = items[:ENROLLMENT_PAGE]
    return _page(
        request,
        ctx,
        "journeys_enrollments.html",
        active="journeys",
        journey=journey,
        items=items,
        names=_names(session, ctx.workspace_id, [e.contact_id for e in items]),
        status=chosen or "",
        next_url=(
            f"{ctx.base}/journeys/{journey.id}/enrollments?status={chosen or ''}&after={next_after}"
            if next_after
            else None
        ),
        first_url=f"{ctx.base}/journeys/{journey.id}/enrollments?status={chosen or ''}" if after else None,
    )


@router.get("/w/{slug}/enrollments/{enrollment_id}")
def enrollment_page(request: Request, ctx: Workspace_, session: ReadSession, enrollment_id: int) -> Response:
    ctx.require("view")
    try:
        enrollment = journeys_service.get_enrollment(session, ctx.workspace_id, enrollment_id)
        timeline = journeys_service.enrollment_timeline(session, ctx.workspace_id, enrollment_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    journey = _journey_or_404(session, ctx.workspace_id, enrollment.journey_id)
    return _page(
        request,
        ctx,
        "journeys_enrollment.html",
        active="journeys",
        journey=journey,
        enrollment=enrollment,
        timeline=timeline,
        contact_name=_names(session, ctx.workspace_id, [enrollment.contact_id]).get(enrollment.contact_id, ""),
    )
