"""Templates and broadcasts: the template list, the editor with one variant per language (subject, preheader, HTML,
text) and the service's validation messages per field, publish/unpublish, a preview rendered for a real contact in a
sandboxed frame, and broadcast scheduling with status and counts.

Everyone can read templates, previews and broadcasts; admins and marketers change them."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suppilo.adapters.http.deps import DbSession, ReadSession
from suppilo.adapters.web import csrf
from suppilo.adapters.web.auth import Ctx, WebError, Workspace_
from suppilo.adapters.web.errors import error_text
from suppilo.adapters.web.security import MAIL_BODY_CSP
from suppilo.adapters.web.templating import render
from suppilo.contacts import service as contacts_service
from suppilo.contacts.schemas import ContactFilter
from suppilo.errors import DomainError, NotFound
from suppilo.messaging import broadcasts as broadcasts_service
from suppilo.messaging import service as templates_service
from suppilo.messaging.models import Template
from suppilo.messaging.outbox_models import Broadcast, OutboxMessage
from suppilo.messaging.schemas import TemplateCreate, TemplateUpdate, VariantIn
from suppilo.messaging.templates import TemplateInvalid

router = APIRouter()
LANGUAGES = templates_service.DEFAULT_LANGUAGES
PARTS = ("subject", "preheader", "html", "text")
EDITORS = frozenset({"admin", "marketer"})
BROADCAST_LIMIT = 100


def _require_editor(ctx: Ctx) -> None:
    if ctx.role not in EDITORS:
        raise WebError(403, "forbidden")


def _template_or_404(session: Session, ctx: Ctx, template_id: int) -> Template:
    try:
        return templates_service.get_template(session, ctx.workspace_id, template_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _field_errors(issues: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Issues by path (``variants.fi.html``), each message with its line number when known."""
    out: dict[str, list[str]] = {}
    for issue in issues:
        line = f" (line {issue['line']})" if issue.get("line") else ""
        out.setdefault(issue["path"], []).append(f"{issue['message']}{line}")
    return out


def _pydantic_errors(exc: ValidationError, prefix: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for err in exc.errors():
        path = ".".join([prefix, *(str(p) for p in err["loc"])]).strip(".")
        out.setdefault(path, []).append(str(err["msg"]))
    return out


# --- list and create -------------------------------------------------------------------------------------------------


def _list_page(
    request: Request,
    ctx: Ctx,
    session: Session,
    *,
    errors: dict[str, list[str]] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    items = templates_service.list_templates(session, ctx.workspace_id)
    return render(
        request,
        "templates.html",
        language=ctx.language,
        timezone=ctx.timezone,
        status_code=status_code,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        active="templates",
        templates=items,
        can_edit=ctx.role in EDITORS,
        errors=errors or {},
        form=form or {"key": "", "name": "", "kind": "marketing"},
        deleted=request.query_params.get("deleted") == "1",
    )


@router.get("/w/{slug}/templates")
def template_list(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    ctx.require("view")
    return _list_page(request, ctx, session)


@router.post("/w/{slug}/templates")
async def template_create(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _require_editor(ctx)
    form = await _form(request)
    values = {k: form.get(k, "").strip() for k in ("key", "name", "kind")}
    try:
        data = TemplateCreate(key=values["key"], name=values["name"], kind=values["kind"] or "marketing")
        template = templates_service.create_template(session, ctx.workspace_id, data)
    except ValidationError as exc:
        return _list_page(request, ctx, session, errors=_pydantic_errors(exc, ""), form=values, status_code=422)
    except DomainError as exc:
        return _list_page(
            request, ctx, session, errors={exc.field: [error_text(exc, ctx.language)]}, form=values, status_code=422
        )
    return RedirectResponse(f"{ctx.base}/templates/{template.id}?lang=en&done=created", status_code=303)


# --- editor ----------------------------------------------------------------------------------------------------------


def _editor(
    request: Request,
    ctx: Ctx,
    session: Session,
    template: Template,
    lang: str,
    *,
    typed: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    done: str = "",
    status_code: int = 200,
) -> Response:
    if lang not in LANGUAGES:
        lang = "en"
    report = templates_service.validation_report(session, ctx.workspace_id, template.id)
    stored = {v.language: v for v in template.variants}
    variant = stored.get(lang)
    values = typed or {
        "subject": variant.subject if variant else "",
        "preheader": variant.preheader if variant else "",
        "html": variant.html if variant else "",
        "text": (variant.text or "") if variant else "",
    }
    field_errors = errors if errors is not None else _field_errors(report["errors"] + report["publish_errors"])
    per_language = {code: sum(1 for p in field_errors if p.startswith(f"variants.{code}.")) for code in LANGUAGES}
    return render(
        request,
        "template_edit.html",
        language=ctx.language,
        timezone=ctx.timezone,
        status_code=status_code,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        active="templates",
        tpl=template,
        vlang=lang,
        languages_of_template=LANGUAGES,
        stored=stored,
        values=values,
        errors=field_errors,
        per_language=per_language,
        report=report,
        other_errors={p: m for p, m in field_errors.items() if not p.startswith("variants.")},
        can_edit=ctx.role in EDITORS,
        done=done,
    )


@router.get("/w/{slug}/templates/{template_id}")
def template_edit(
    request: Request, ctx: Workspace_, session: ReadSession, template_id: int, lang: str = "en", done: str = ""
) -> Response:
    ctx.require("view")
    template = _template_or_404(session, ctx, template_id)
    return _editor(request, ctx, session, template, lang, done=done)


@router.post("/w/{slug}/templates/{template_id}/variants/{lang}")
async def variant_save(request: Request, ctx: Workspace_, session: DbSession, template_id: int, lang: str) -> Response:
    """Save one language's variant; refused content comes back with the messages next to its fields, as typed."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _require_editor(ctx)
    template = _template_or_404(session, ctx, template_id)
    if lang not in LANGUAGES:
        raise WebError(404, "not_found")
    form = await _form(request)
    typed = {part: form.get(part, "") for part in PARTS}
    try:
        data = VariantIn(
            subject=typed["subject"].strip(),
            preheader=typed["preheader"],
            html=typed["html"],
            text=typed["text"] or None,
        )
        templates_service.put_variant(session, ctx.workspace_id, template.id, lang, data)
    except ValidationError as exc:
        errors = _pydantic_errors(exc, f"variants.{lang}")
        return _editor(request, ctx, session, template, lang, typed=typed, errors=errors, status_code=422)
    except TemplateInvalid as exc:
        session.rollback()
        template = _template_or_404(session, ctx, template_id)
        errors = _field_errors([i.as_dict() for i in exc.issues])
        return _editor(request, ctx, session, template, lang, typed=typed, errors=errors, status_code=422)
    except DomainError as exc:
        errors = {exc.field: [error_text(exc, ctx.language)]}
        return _editor(request, ctx, session, template, lang, typed=typed, errors=errors, status_code=422)
    return RedirectResponse(f"{ctx.base}/templates/{template.id}?lang={lang}&done=saved", status_code=303)


@router.post("/w/{slug}/templates/{template_id}/variants/{lang}/delete")
async def variant_delete(
    request: Request, ctx: Workspace_, session: DbSession, template_id: int, lang: str
) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _require_editor(ctx)
    template = _template_or_404(session, ctx, template_id)
    try:
        templates_service.delete_variant(session, ctx.workspace_id, template.id, lang)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    except DomainError as exc:
        return _editor(
            request, ctx, session, template, lang, errors={exc.field: [error_text(exc, ctx.language)]}, status_code=422
        )
    return RedirectResponse(f"{ctx.base}/templates/{template.id}?lang={lang}&done=deleted", status_code=303)


@router.post("/w/{slug}/templates/{template_id}/settings")
async def template_settings(request: Request, ctx: Workspace_, session: DbSession, template_id: int) -> Response:
    """Name, description and kind."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _require_editor(ctx)
    template = _template_or_404(session, ctx, template_id)
    form = await _form(request)
    lang = form.get("lang", "en")
    try:
        data = TemplateUpdate(
            name=form.get("name", "").strip() or None,
            description=form.get("description", ""),
            kind=form.get("kind") or None,
        )
        templates_service.update_template(session, ctx.workspace_id, template.id, data)
    except ValidationError as exc:
        return _editor(request, ctx, session, template, lang, errors=_pydantic_errors(exc, ""), status_code=422)
    except TemplateInvalid as exc:
        session.rollback()
        template = _template_or_404(session, ctx, template_id)
        errors = _field_errors([i.as_dict() for i in exc.issues])
        return _editor(request, ctx, session, template, lang, errors=errors, status_code=422)
    return RedirectResponse(f"{ctx.base}/templates/{template.id}?lang={lang}&done=settings", status_code=303)


@router.post("/w/{slug}/templates/{template_id}/publish")
async def template_publish(request: Request, ctx: Workspace_, session: DbSession, template_id: int) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _require_editor(ctx)
    template = _template_or_404(session, ctx, template_id)
    form = await _form(request)
    lang = form.get("lang", "en")
    try:
        templates_service.publish_template(session, ctx.workspace_id, template.id)
    except TemplateInvalid as exc:
        errors = _field_errors([i.as_dict() for i in exc.issues])
        return _editor(request, ctx, session, template, lang, errors=errors, done="unpublishable", status_code=422)
    return RedirectResponse(f"{ctx.base}/templates/{template.id}?lang={lang}&done=published", status_code=303)


@router.post("/w/{slug}/templates/{template_id}/unpublish")
async def template_unpublish(request: Request, ctx: Workspace_, session: DbSession, template_id: int) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _require_editor(ctx)
    template = _template_or_404(session, ctx, template_id)
    form = await _form(request)
    templates_service.unpublish_template(session, ctx.workspace_id, template.id)
    lang = form.get("lang", "en")
    return RedirectResponse(f"{ctx.base}/templates/{template.id}?lang={lang}&done=unpublished", status_code=303)


@router.post("/w/{slug}/templates/{template_id}/delete")
async def template_delete(request: Request, ctx: Workspace_, session: DbSession, template_id: int) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _require_editor(ctx)
    template = _template_or_404(session, ctx, template_id)
    templates_service.delete_template(session, ctx.workspace_id, template.id)
    return RedirectResponse(f"{ctx.base}/templates?deleted=1", status_code=303)


# --- preview ---------------------------------------------------------------------------------------------------------


@router.get("/w/{slug}/templates/{template_id}/preview")
def template_preview(
    request: Request,
    ctx: Workspace_,
    session: ReadSession,
    template_id: int,
    q: str = "",
    contact: int | None = None,
    lang: str = "",
) -> Response:
    """Search a contact, pick a language: subject, preheader and text here, the HTML in a sandboxed frame."""
    ctx.require("view")
    template = _template_or_404(session, ctx, template_id)
    found: list[Any] = []
    if q.strip():
        try:
            page = contacts_service.list_contacts(session, ctx.workspace_id, ContactFilter(q=q.strip()[:200]), limit=20)
            found = page.items
        except DomainError:
            found = []
    chosen = None
    rendered = None
    error = ""
    if contact is not None:
        try:
            chosen = contacts_service.get_contact(session, ctx.workspace_id, contact)
        except NotFound as exc:
            raise WebError(404, "not_found") from exc
        try:
            rendered = templates_service.preview(
                session, ctx.workspace_id, template.id, chosen.id, language=lang or None
            )
        except DomainError as exc:
            error = error_text(exc, ctx.language)
    body_query = urlencode({"contact": chosen.id, "lang": lang}) if chosen is not None else ""
    return render(
        request,
        "template_preview.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        active="templates",
        tpl=template,
        variant_languages=[v.language for v in template.variants],
        q=q,
        found=found,
        chosen=chosen,
        vlang=lang,
        rendered=rendered,
        error=error,
        body_url=f"{ctx.base}/templates/{template.id}/preview/body?{body_query}",
    )


@router.get("/w/{slug}/templates/{template_id}/preview/body")
def template_preview_body(
    request: Request, ctx: Workspace_, session: ReadSession, template_id: int, contact: int, lang: str = ""
) -> Response:
    """The rendered HTML for the sandboxed frame, under the mail catcher's policy: no script, no fetch."""
    ctx.require("view")
    template = _template_or_404(session, ctx, template_id)
    try:
        rendered = templates_service.preview(session, ctx.workspace_id, template.id, contact, language=lang or None)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    except DomainError as exc:
        raise WebError(422, error_text(exc, ctx.language)) from exc
    return HTMLResponse(
        rendered.html,
        headers={
            "content-security-policy": MAIL_BODY_CSP,
            "x-frame-options": "SAMEORIGIN",
            "cache-control": "no-store",
        },
    )


# --- broadcasts ------------------------------------------------------------------------------------------------------


def _broadcast_counts(session: Session, workspace_id: int, ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return counts
    rows = session.execute(
        select(
            OutboxMessage.broadcast_id,
            OutboxMessage.status,
            func.count(),
            func.count(OutboxMessage.opened_at),
            func.count(OutboxMessage.clicked_at),
        )
        .where(OutboxMessage.workspace_id == workspace_id, OutboxMessage.broadcast_id.in_(ids))
        .group_by(OutboxMessage.broadcast_id, OutboxMessage.status)
    )
    for bid, status, n, opened, clicked in rows:
        if bid is None:  # excluded by the IN filter; narrows the nullable column
            continue
        c = counts[int(bid)]
        c[str(status)] = c.get(str(status), 0) + int(n)
        c["opened"] = c.get("opened", 0) + int(opened)
        c["clicked"] = c.get("clicked", 0) + int(clicked)
    return counts


def _broadcasts_page(
    request: Request,
    ctx: Ctx,
    session: Session,
    *,
    errors: dict[str, list[str]] | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    rows = list(
        session.scalars(
            select(Broadcast)
            .where(Broadcast.workspace_id == ctx.workspace_id)
            .order_by(Broadcast.id.desc())
            .limit(BROADCAST_LIMIT)
        )
    )
    published = [t for t in templates_service.list_templates(session, ctx.workspace_id) if t.status == "published"]
    return render(
        request,
        "templates_broadcasts.html",
        language=ctx.language,
        timezone=ctx.timezone,
        status_code=status_code,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        active="templates",
        broadcasts=rows,
        counts=_broadcast_counts(session, ctx.workspace_id, [r.id for r in rows]),
        published=published,
        can_edit=ctx.role in EDITORS,
        errors=errors or {},
        form=form or {"name": "", "template_key": "", "audience": "tag", "tag": "", "contacts": "", "timing": "now"},
        done=request.query_params.get("done", ""),
    )


@router.get("/w/{slug}/broadcasts")
def broadcast_list(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    ctx.require("view")
    return _broadcasts_page(request, ctx, session)


def _parse_ids(text: str) -> list[int]:
    ids: list[int] = []
    for part in text.replace(",", " ").split():
        if not part.isdigit():
            raise DomainError("contacts", f"{part!r} is not a contact id")
        ids.append(int(part))
    return ids


def _schedule(form: dict[str, str], zone_name: str) -> dict[str, Any]:
    timing = form.get("timing", "now")
    if timing == "now":
        return {}
    if timing == "at":
        try:
            local = datetime.fromisoformat(form.get("send_at", ""))
        except ValueError as exc:
            raise DomainError("send_at", "give a date and time") from exc
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return {"send_at": local.replace(tzinfo=zone).astimezone(UTC) if local.tzinfo is None else local}
    if timing == "local":
        try:
            day = date.fromisoformat(form.get("local_date", ""))
        except ValueError as exc:
            raise DomainError("local_date", "give a date") from exc
        try:
            at = time.fromisoformat(form.get("local_time", ""))
        except ValueError as exc:
            raise DomainError("local_time", "give a time of day") from exc
        return {"local_date": day, "local_time": at.replace(second=0, microsecond=0)}
    raise DomainError("timing", "choose when to send")


@router.post("/w/{slug}/broadcasts")
async def broadcast_create(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    """Schedule a published template to a tag or a list of contact ids, now, at a moment (in the workspace's time
    zone) or at a local time of day in each contact's zone."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _require_editor(ctx)
    form = await _form(request)
    keep = {
        k: form.get(k, "")
        for k in (
            "name",
            "template_key",
            "audience",
            "tag",
            "contacts",
            "timing",
            "send_at",
            "local_date",
            "local_time",
        )
    }
    try:
        if not keep["name"].strip():
            raise DomainError("name", "give the broadcast a name")
        template = templates_service.get_template_by_key(session, ctx.workspace_id, keep["template_key"])
        if template.status != "published":
            raise DomainError("template_key", "only a published template can be broadcast")
        audience: dict[str, Any] = {}
        if keep["audience"] == "contacts":
            audience["contact_ids"] = _parse_ids(keep["contacts"])
            if not audience["contact_ids"]:
                raise DomainError("contacts", "give at least one contact id")
        else:
            if not keep["tag"].strip():
                raise DomainError("tag", "give a tag")
            audience["tag"] = keep["tag"].strip()[:100]
        row = broadcasts_service.create_broadcast(
            session,
            ctx.workspace_id,
            name=keep["name"].strip(),
            template_key=template.key,
            kind=template.kind,
            **audience,
            **_schedule(keep, ctx.workspace_timezone),
        )
    except DomainError as exc:
        session.rollback()
        field = exc.field.split("[")[0].replace("contact_ids", "contacts")
        return _broadcasts_page(
            request, ctx, session, errors={field: [error_text(exc, ctx.language)]}, form=keep, status_code=422
        )
    return RedirectResponse(f"{ctx.base}/broadcasts?done={row.id}", status_code=303)
