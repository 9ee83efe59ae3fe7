"""Settings (admins only): the workspace (language, currency, time zone, postal address, frequency cap, quiet hours),
ideal customer profiles and engagement rules, lifecycle stages, consent policies per country, the sending domain with
its DKIM record, API keys and users. Every change goes through the owning domain's service."""

from __future__ import annotations

import json
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from suppilo.accounts import service as accounts
from suppilo.adapters.http.deps import DbSession, ReadSession
from suppilo.adapters.web import csrf
from suppilo.adapters.web.auth import Ctx, WebError, Workspace_
from suppilo.adapters.web.errors import error_text
from suppilo.adapters.web.templating import render
from suppilo.consent import policies as consent_policies
from suppilo.consent import service as consent_service
from suppilo.contacts import service as contacts_service
from suppilo.contacts.schemas import LifecycleStageIn, StageSetIn
from suppilo.engine.scoring import engagement_to_json
from suppilo.errors import DomainError, NotFound
from suppilo.scoring import service as scoring_service
from suppilo.scoring.schemas import IcpCreate, IcpUpdate
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import SCOPES, WorkspaceUpdate

router = APIRouter()
SECTIONS = ("workspace", "scoring", "stages", "consent", "sending", "api-keys", "users")
ROLES = ("admin", "marketer", "sales", "analyst")
ADDRESS_FIELDS = ("address_line1", "address_line2", "postal_code", "city", "region", "address_country")
# Countries shown in the consent table: the EU/EEA, the opt-out and CASL countries and a few common others.
OTHER_COUNTRIES = ("GB", "CH", "US", "CA", "AU")


def _admin(ctx: Ctx) -> None:
    ctx.require("settings")


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _errors_of(exc: ValidationError, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for err in exc.errors():
        path = ".".join([prefix, *(str(p) for p in err["loc"])]).strip(".")
        out.setdefault(path, str(err["msg"]))
    return out


def _page(
    request: Request, ctx: Ctx, template: str, section: str, *, status_code: int = 200, **context: Any
) -> Response:
    return render(
        request,
        template,
        language=ctx.language,
        timezone=ctx.timezone,
        status_code=status_code,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        active="settings",
        section=section,
        sections=SECTIONS,
        done=request.query_params.get("done", ""),
        **context,
    )


@router.get("/w/{slug}/settings")
def settings_home(ctx: Workspace_) -> Response:
    _admin(ctx)
    return RedirectResponse(f"{ctx.base}/settings/workspace", status_code=303)


# --- workspace -------------------------------------------------------------------------------------------------------


def _workspace_values(session: Session, ctx: Ctx) -> dict[str, str]:
    ws = workspaces_service.get_workspace(session, ctx.workspace_id)
    settings = ws.settings or {}
    cap = settings.get("frequency_cap") or {}
    quiet = settings.get("quiet_hours") or {}
    values = {
        "name": ws.name,
        "default_language": ws.default_language,
        "currency": ws.currency,
        "timezone": ws.timezone,
        "country": ws.country or "",
        "cap_max": str(cap.get("max", "")),
        "cap_days": str(cap.get("days", "")),
        "quiet_start": str(quiet.get("start", "")),
        "quiet_end": str(quiet.get("end", "")),
    }
    for name in ADDRESS_FIELDS:
        values[name] = getattr(ws, name) or ""
    return values


def _workspace_page(
    request: Request,
    ctx: Ctx,
    session: Session,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    return _page(
        request,
        ctx,
        "settings_workspace.html",
        "workspace",
        status_code=422 if errors else 200,
        values=values or _workspace_values(session, ctx),
        errors=errors or {},
    )


@router.get("/w/{slug}/settings/workspace")
def workspace_settings(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    _admin(ctx)
    return _workspace_page(request, ctx, session)


def _int_or_text(value: str) -> int | str:
    return int(value) if value.strip().lstrip("-").isdigit() else value


@router.post("/w/{slug}/settings/workspace")
async def workspace_save(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _admin(ctx)
    form = await _form(request)
    values = {k: form.get(k, "").strip() for k in _workspace_values(session, ctx)}
    changes: dict[str, Any] = {
        "name": values["name"],
        "default_language": values["default_language"],
        "currency": values["currency"].upper(),
        "timezone": values["timezone"],
        "country": values["country"].upper() or None,
    }
    for name in ADDRESS_FIELDS:
        changes[name] = (values[name].upper() if name == "address_country" else values[name]) or None
    if values["cap_max"] or values["cap_days"]:
        changes["frequency_cap"] = {"max": _int_or_text(values["cap_max"]), "days": _int_or_text(values["cap_days"])}
    else:
        changes["frequency_cap"] = None
    if values["quiet_start"] or values["quiet_end"]:
        changes["quiet_hours"] = {"start": values["quiet_start"], "end": values["quiet_end"]}
    else:
        changes["quiet_hours"] = None
    if changes["country"] is None:
        changes.pop("country")
    try:
        data = WorkspaceUpdate(**changes)
        workspaces_service.update_workspace(session, ctx.workspace_id, data)
    except ValidationError as exc:
        session.rollback()
        return _workspace_page(request, ctx, session, values, _errors_of(exc))
    except DomainError as exc:
        session.rollback()
        return _workspace_page(request, ctx, session, values, {exc.field: error_text(exc, ctx.language)})
    return RedirectResponse(f"{ctx.base}/settings/workspace?done=saved", status_code=303)


# --- ICPs and engagement rules ---------------------------------------------------------------------------------------


def _scoring_page(
    request: Request,
    ctx: Ctx,
    session: Session,
    *,
    typed: dict[str, dict[str, str]] | None = None,
    errors: dict[str, dict[str, str]] | None = None,
) -> Response:
    icps = scoring_service.list_icps(session, ctx.workspace_id)
    forms: dict[str, dict[str, str]] = {
        str(i.id): {
            "name": i.name,
            "description": i.description,
            "definition": json.dumps(i.definition, indent=2, ensure_ascii=False),
            "active": "1" if i.active else "",
        }
        for i in icps
    }
    forms["new"] = {"name": "", "description": "", "definition": "", "active": "1"}
    engagement = scoring_service.engagement_config(session, ctx.workspace_id)
    raw_engagement = json.dumps(engagement_to_json(engagement), indent=2, ensure_ascii=False)
    forms["engagement"] = {"definition": raw_engagement}
    forms.update(typed or {})
    return _page(
        request,
        ctx,
        "settings_scoring.html",
        "scoring",
        status_code=422 if errors else 200,
        icps=icps,
        forms=forms,
        errors=errors or {},
    )


@router.get("/w/{slug}/settings/scoring")
def scoring_settings(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    _admin(ctx)
    return _scoring_page(request, ctx, session)


def _parse_json(text: str) -> tuple[Any, str]:
    try:
        return json.loads(text), ""
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"


@router.post("/w/{slug}/settings/icps/{icp_key}")
async def icp_save(request: Request, ctx: Workspace_, session: DbSession, icp_key: str) -> Response:
    """Create (``new``) or change an ICP; the definition is JSON validated field by field by the scoring service."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _admin(ctx)
    form = await _form(request)
    typed = {k: form.get(k, "") for k in ("name", "description", "definition")}
    typed["active"] = "1" if form.get("active") else ""
    definition, json_error = _parse_json(typed["definition"])
    if json_error:
        return _scoring_page(
            request, ctx, session, typed={icp_key: typed}, errors={icp_key: {"definition": json_error}}
        )
    try:
        if icp_key == "new":
            scoring_service.create_icp(
                session,
                ctx.workspace_id,
                IcpCreate(
                    name=typed["name"].strip(),
                    description=typed["description"],
                    definition=definition,
                    active=bool(typed["active"]),
                ),
                actor=f"user:{ctx.user.info.user_id} ({ctx.user.info.email})",
            )
        elif icp_key.isdigit():
            scoring_service.update_icp(
                session,
                ctx.workspace_id,
                int(icp_key),
                IcpUpdate(
                    name=typed["name"].strip(),
                    description=typed["description"],
                    definition=definition,
                    active=bool(typed["active"]),
                ),
                actor=f"user:{ctx.user.info.user_id} ({ctx.user.info.email})",
            )
        else:
            raise WebError(404, "not_found")
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    except ValidationError as exc:
        session.rollback()
        return _scoring_page(request, ctx, session, typed={icp_key: typed}, errors={icp_key: _errors_of(exc)})
    except DomainError as exc:
        session.rollback()
        field = "name" if exc.field == "name" else "definition"
        message = (
            f"{exc.field}: {error_text(exc, ctx.language)}"
            if field == "definition" and exc.field
            else error_text(exc, ctx.language)
        )
        return _scoring_page(request, ctx, session, typed={icp_key: typed}, errors={icp_key: {field: message}})
    return RedirectResponse(f"{ctx.base}/settings/scoring?done=icp", status_code=303)


@router.post("/w/{slug}/settings/engagement")
async def engagement_save(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _admin(ctx)
    form = await _form(request)
    typed = {"definition": form.get("definition", "")}
    raw, json_error = _parse_json(typed["definition"])
    if json_error:
        return _scoring_page(
            request, ctx, session, typed={"engagement": typed}, errors={"engagement": {"definition": json_error}}
        )
    try:
        scoring_service.set_engagement_config(
            session, ctx.workspace_id, raw, actor=f"user:{ctx.user.info.user_id} ({ctx.user.info.email})"
        )
    except DomainError as exc:
        session.rollback()
        message = f"{exc.field}: {error_text(exc, ctx.language)}" if exc.field else error_text(exc, ctx.language)
        return _scoring_page(
            request, ctx, session, typed={"engagement": typed}, errors={"engagement": {"definition": message}}
        )
    return RedirectResponse(f"{ctx.base}/settings/scoring?done=engagement", status_code=303)


# --- lifecycle stages ------------------------------------------------------------------------------------------------


def _stages_page(
    request: Request,
    ctx: Ctx,
    session: Session,
    *,
    rows: list[dict[str, str]] | None = None,
    extra: dict[str, str] | None = None,
    error: str = "",
) -> Response:
    stages = contacts_service.list_stages(session, ctx.workspace_id)
    counts = {s.key: s.contacts for s in stages}
    if rows is None:
        rows = [
            {"key": s.key, "label": s.label, "kind": s.kind, "description": s.description, "remove": ""} for s in stages
        ]
        rows.append({"key": "", "label": "", "kind": "funnel", "description": "", "remove": ""})
    return _page(
        request,
        ctx,
        "settings_stages.html",
        "stages",
        status_code=422 if error else 200,
        rows=rows,
        counts=counts,
        existing=[s.key for s in stages],
        extra=extra or {"move_to": "", "reason": ""},
        error=error,
    )


@router.get("/w/{slug}/settings/stages")
def stages_settings(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    _admin(ctx)
    return _stages_page(request, ctx, session)


@router.post("/w/{slug}/settings/stages")
async def stages_save(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    """Replace the stage set in the order shown; contacts in a removed stage move to the chosen stage."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _admin(ctx)
    form = await request.form()
    keys = [str(v) for v in form.getlist("key")]
    labels = [str(v) for v in form.getlist("label")]
    kinds = [str(v) for v in form.getlist("kind")]
    descriptions = [str(v) for v in form.getlist("description")]
    removed = {str(v) for v in form.getlist("remove")}
    rows = [
        {
            "key": k.strip(),
            "label": (labels[i] if i < len(labels) else "").strip(),
            "kind": kinds[i] if i < len(kinds) else "funnel",
            "description": descriptions[i] if i < len(descriptions) else "",
            "remove": "1" if str(i) in removed else "",
        }
        for i, k in enumerate(keys)
    ]
    extra = {"move_to": str(form.get("move_to") or ""), "reason": str(form.get("reason") or "")}
    kept = [r for r in rows if not r["remove"] and (r["key"] or r["label"])]
    try:
        data = StageSetIn(
            stages=[
                LifecycleStageIn(
                    key=r["key"],
                    label=r["label"],
                    position=(i + 1) * 10,
                    kind=r["kind"] if r["kind"] in ("funnel", "side") else "funnel",
                    description=r["description"],
                )
                for i, r in enumerate(kept)
            ],
            move_to=extra["move_to"] or None,
            reason=extra["reason"],
        )
        contacts_service.replace_stages(
            session, ctx.workspace_id, data, actor=f"user:{ctx.user.info.user_id} ({ctx.user.info.email})"
        )
    except ValidationError as exc:
        session.rollback()
        message = "; ".join(f"{k}: {v}" for k, v in _errors_of(exc).items())
        return _stages_page(request, ctx, session, rows=rows, extra=extra, error=message)
    except DomainError as exc:
        session.rollback()
        return _stages_page(request, ctx, session, rows=rows, extra=extra, error=error_text(exc, ctx.language))
    return RedirectResponse(f"{ctx.base}/settings/stages?done=saved", status_code=303)


# --- consent policies (read-only: derived from the law per country) ---------------------------------------------------


@router.get("/w/{slug}/settings/consent")
def consent_settings(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    _admin(ctx)
    home, eu_doi = consent_service.workspace_rules(session, ctx.workspace_id)
    countries = sorted(set(consent_policies.EU_EEA) | set(OTHER_COUNTRIES) | ({home} if home else set()))
    rows = [(code, consent_policies.regime(code, eu_double_opt_in=eu_doi)) for code in countries]
    return _page(
        request,
        ctx,
        "settings_consent.html",
        "consent",
        rows=rows,
        home=home,
        eu_doi=eu_doi,
        default_regime=consent_policies.regime(None, eu_double_opt_in=eu_doi),
    )


# --- sending domain and DKIM -----------------------------------------------------------------------------------------


@router.get("/w/{slug}/settings/sending")
def sending_settings(request: Request, ctx: Workspace_) -> Response:
    """The From address and the DKIM TXT record to publish (what ``suppilo mail dkim-record`` prints)."""
    _admin(ctx)
    from suppilo.messaging.settings import SenderSettings, configured_dkim_record

    sender = SenderSettings()
    error = ""
    try:
        record = configured_dkim_record(sender)
    except OSError as exc:
        record, error = None, f"the DKIM key file cannot be read: {exc.strerror or exc}"
    except ValueError as exc:
        record, error = None, f"the DKIM key file is not a usable private key: {exc}"
    return _page(
        request,
        ctx,
        "settings_sending.html",
        "sending",
        sender=sender,
        record=record,
        zone_line=record.zone_line() if record else "",
        error=error,
        smtp_host=request.app.state.settings.smtp_host,
    )


# --- API keys --------------------------------------------------------------------------------------------------------


def _keys_page(
    request: Request,
    ctx: Ctx,
    session: Session,
    *,
    raw_key: str = "",
    errors: dict[str, str] | None = None,
    typed: dict[str, Any] | None = None,
) -> Response:
    return _page(
        request,
        ctx,
        "settings_api_keys.html",
        "api-keys",
        status_code=422 if errors else 200,
        keys=workspaces_service.list_api_keys(session, ctx.workspace_id),
        scopes=SCOPES,
        raw_key=raw_key,
        errors=errors or {},
        typed=typed or {"name": "", "scopes": []},
    )


@router.get("/w/{slug}/settings/api-keys")
def api_keys(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    _admin(ctx)
    return _keys_page(request, ctx, session)


@router.post("/w/{slug}/settings/api-keys")
async def api_key_create(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    """A new key: the page shows the raw key this once (only its hash is stored)."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _admin(ctx)
    form = await request.form()
    name = str(form.get("name") or "").strip()[:200]
    scopes = [str(s) for s in form.getlist("scopes")]
    try:
        _key, raw = workspaces_service.create_api_key(session, ctx.workspace_id, scopes=scopes, name=name)
    except DomainError as exc:
        session.rollback()
        return _keys_page(
            request,
            ctx,
            session,
            errors={exc.field: error_text(exc, ctx.language)},
            typed={"name": name, "scopes": scopes},
        )
    return _keys_page(request, ctx, session, raw_key=raw)


@router.post("/w/{slug}/settings/api-keys/{key_id}/revoke")
async def api_key_revoke(request: Request, ctx: Workspace_, session: DbSession, key_id: int) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _admin(ctx)
    try:
        workspaces_service.revoke_api_key(session, ctx.workspace_id, key_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    return RedirectResponse(f"{ctx.base}/settings/api-keys?done=revoked", status_code=303)


# --- users -----------------------------------------------------------------------------------------------------------


def _users_page(
    request: Request,
    ctx: Ctx,
    session: Session,
    *,
    errors: dict[str, str] | None = None,
    typed: dict[str, str] | None = None,
    password: str = "",
    created: str = "",
) -> Response:
    return _page(
        request,
        ctx,
        "settings_users.html",
        "users",
        status_code=422 if errors else 200,
        members=workspaces_service.list_members(session, ctx.workspace_id),
        roles=ROLES,
        errors=errors or {},
        typed=typed or {"email": "", "name": "", "role": "marketer"},
        password=password,
        created=created,
    )


@router.get("/w/{slug}/settings/users")
def users(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    _admin(ctx)
    return _users_page(request, ctx, session)


@router.post("/w/{slug}/settings/users")
async def user_add(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    """Add a user with a role: an existing user (by email) gets the role here; a new one is created with a
    generated password, shown once."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _admin(ctx)
    form = await _form(request)
    typed = {k: form.get(k, "").strip() for k in ("email", "name", "role")}
    if typed["role"] not in ROLES:
        return _users_page(request, ctx, session, errors={"role": "choose a role"}, typed=typed)
    password = ""
    try:
        user = accounts.get_user_by_email(session, accounts.normalize_email(typed["email"]))
        if user is None:
            password = secrets.token_urlsafe(12)
            user = accounts.create_user(
                session, email=typed["email"], password=password, name=typed["name"][:200], language=ctx.language
            )
        accounts.grant(session, ctx.workspace_id, user.id, typed["role"])
    except DomainError as exc:
        session.rollback()
        return _users_page(request, ctx, session, errors={exc.field: error_text(exc, ctx.language)}, typed=typed)
    return _users_page(request, ctx, session, password=password, created=user.email)


@router.post("/w/{slug}/settings/users/{user_id}/role")
async def user_role(request: Request, ctx: Workspace_, session: DbSession, user_id: int) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _admin(ctx)
    form = await _form(request)
    role = form.get("role", "")
    members = {u.id: r for u, r in workspaces_service.list_members(session, ctx.workspace_id)}
    if user_id not in members:
        raise WebError(404, "not_found")
    if role not in ROLES:
        return _users_page(request, ctx, session, errors={f"role-{user_id}": "choose a role"})
    admins = [uid for uid, r in members.items() if r == "admin"]
    if members[user_id] == "admin" and role != "admin" and admins == [user_id]:
        return _users_page(request, ctx, session, errors={f"role-{user_id}": "the workspace needs at least one admin"})
    try:
        accounts.grant(session, ctx.workspace_id, user_id, role)
    except DomainError as exc:
        return _users_page(request, ctx, session, errors={f"role-{user_id}": error_text(exc, ctx.language)})
    return RedirectResponse(f"{ctx.base}/settings/users?done=role", status_code=303)
