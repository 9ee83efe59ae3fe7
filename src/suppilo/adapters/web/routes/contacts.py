"""Contacts: search and filters with keyset paging, and the contact page (properties, lifecycle and its history,
timeline, consent, segments, deals); editors can tag a contact and move its lifecycle stage."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from suppilo.adapters.http.deps import DbSession, ReadSession
from suppilo.adapters.web import csrf
from suppilo.adapters.web.auth import WebError, Workspace_
from suppilo.adapters.web.errors import error_text
from suppilo.adapters.web.templating import render
from suppilo.companies import service as companies_service
from suppilo.consent import service as consent_service
from suppilo.contacts import merge as merge_service
from suppilo.contacts import service as contacts_service
from suppilo.contacts.schemas import ContactFilter
from suppilo.deals import service as deals_service
from suppilo.errors import DomainError, NotFound
from suppilo.scoring import service as scoring_service
from suppilo.segments import service as segments_service
from suppilo.workspaces import service as workspaces_service

router = APIRouter()
PAGE_SIZE = 50
TIMELINE_PAGE = 30
# Written onto contacts by the CLV fit (analytics.fit_clv).
CLV_PROPERTIES = ("predicted_clv_12m", "p_alive", "predicted_purchases_90d", "clv_tier")


def _query(**params: Any) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "", False)}
    return urlencode(clean)


@router.get("/w/{slug}/contacts")
def contacts(
    request: Request,
    ctx: Workspace_,
    session: ReadSession,
    q: str = "",
    stage: str = "",
    tag: str = "",
    anonymous: bool = False,
    cursor: str | None = None,
) -> Response:
    ctx.require("view")
    stages = contacts_service.stage_specs(session, ctx.workspace_id)
    flt = ContactFilter(
        q=q.strip()[:200] or None,
        lifecycle_stage=stage or None,
        tag=tag.strip()[:100] or None,
        include_anonymous=anonymous,
    )
    error = ""
    try:
        page = contacts_service.list_contacts(session, ctx.workspace_id, flt, cursor=cursor, limit=PAGE_SIZE)
    except DomainError as exc:
        error = error_text(exc, ctx.language)
        page = contacts_service.list_contacts(session, ctx.workspace_id, flt, cursor=None, limit=PAGE_SIZE)
    filters = {"q": q, "stage": stage, "tag": tag, "anonymous": anonymous}
    next_url = f"{ctx.base}/contacts?{_query(**filters, cursor=page.next_cursor)}" if page.next_cursor else None
    first_url = f"{ctx.base}/contacts?{_query(**filters)}" if cursor else None
    return render(
        request,
        "contacts.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        stages=stages,
        labels={s.key: s.label for s in stages},
        items=page.items,
        filters=filters,
        next_url=next_url,
        first_url=first_url,
        error=error,
    )


def _contact_or_404(session: Any, workspace_id: int, contact_id: int) -> Any:
    try:
        return contacts_service.get_contact(session, workspace_id, contact_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc


@router.get("/w/{slug}/contacts/{contact_id}")
def contact_page(
    request: Request,
    ctx: Workspace_,
    session: ReadSession,
    contact_id: int,
    before: datetime | None = None,
    done: str = "",
) -> Response:
    ctx.require("view")
    contact = _contact_or_404(session, ctx.workspace_id, contact_id)
    if contact.id != contact_id:
        return RedirectResponse(f"{ctx.base}/contacts/{contact.id}", status_code=303)
    read = contacts_service.contact_read(session, contact)
    if before is not None and before.tzinfo is None:
        before = None
    timeline = contacts_service.timeline(session, ctx.workspace_id, contact.id, before=before, limit=TIMELINE_PAGE)
    stages = contacts_service.stage_specs(session, ctx.workspace_id)
    history = contacts_service.stage_history(session, ctx.workspace_id, contact.id)
    records = consent_service.list_records(session, ctx.workspace_id, contact.id)
    consent_state, objection = consent_service.derive_state(records)
    segments = segments_service.contact_segments(session, ctx.workspace_id, contact.id)
    deals, _ = deals_service.list_deals(session, ctx.workspace_id, contact_id=contact.id, limit=50)
    deal_stages = {
        st.id: st.label
        for sts in deals_service.pipeline_stages(
            session, ctx.workspace_id, sorted({d.pipeline_id for d in deals})
        ).values()
        for st in sts
    }
    company = None
    if contact.company_id is not None:
        try:
            company = companies_service.get_company(session, ctx.workspace_id, contact.company_id)
        except NotFound:
            company = None
    members = {u.id: u.name or u.email for u, _ in workspaces_service.list_members(session, ctx.workspace_id)}
    scores = scoring_service.explain(session, ctx.workspace_id, contact.id)
    older_url = None
    if timeline.next_before is not None:
        older_url = f"{ctx.base}/contacts/{contact.id}?{_query(before=timeline.next_before.isoformat())}#timeline"
    return render(
        request,
        "contact.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        contact=read,
        company=company,
        owner=members.get(read.owner_id) if read.owner_id else None,
        labels={s.key: s.label for s in stages},
        stages=stages,
        history=history,
        timeline=timeline.items,
        older_url=older_url,
        paged=before is not None,
        consent_state=sorted(consent_state.items()),
        consent_records=list(reversed(records)),
        objection=objection,
        segments=segments,
        deals=deals,
        deal_stages=deal_stages,
        scores=scores["scores"],
        priority=scores["priority"],
        clv={k: read.properties.get(k) for k in CLV_PROPERTIES},
        done=done,
    )


@router.post("/w/{slug}/contacts/{contact_id}/tags")
async def add_tag(
    request: Request,
    ctx: Workspace_,
    session: DbSession,
    contact_id: int,
    tag: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    ctx.require("edit")
    contact = _contact_or_404(session, ctx.workspace_id, contact_id)
    try:
        contacts_service.add_tags(session, ctx.workspace_id, contact.id, [tag])
    except DomainError as exc:
        raise WebError(422, error_text(exc, ctx.language)) from exc
    return RedirectResponse(f"{ctx.base}/contacts/{contact.id}?done=tag", status_code=303)


@router.post("/w/{slug}/contacts/{contact_id}/stage")
async def move_stage(
    request: Request,
    ctx: Workspace_,
    session: DbSession,
    contact_id: int,
    stage: Annotated[str, Form(max_length=32)] = "",
    reason: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    ctx.require("edit")
    contact = _contact_or_404(session, ctx.workspace_id, contact_id)
    try:
        contacts_service.move_contact_stage(
            session,
            ctx.workspace_id,
            contact.id,
            stage,
            reason=reason.strip() or "manual move in the web interface",
            actor=f"user:{ctx.user.info.user_id} ({ctx.user.info.email})",
        )
    except DomainError as exc:
        raise WebError(422, error_text(exc, ctx.language)) from exc
    return RedirectResponse(f"{ctx.base}/contacts/{contact.id}?done=stage", status_code=303)


def _merge_page(
    request: Request,
    ctx: Any,
    session: Any,
    contact: Any,
    *,
    q: str = "",
    other: Any = None,
    error: str = "",
    status_code: int = 200,
) -> Response:
    candidates: list[Any] = []
    if q.strip() and other is None:
        flt = ContactFilter(q=q.strip()[:200], include_anonymous=True)
        try:
            page = contacts_service.list_contacts(session, ctx.workspace_id, flt, limit=20)
            candidates = [c for c in page.items if c.id != contact.id]
        except DomainError as exc:
            error = error or error_text(exc, ctx.language)
    plan = merge_service.preview(session, ctx.workspace_id, contact, other) if other is not None else None
    names: dict[str, dict[int, str]] = {"company_id": {}, "owner_id": {}}
    if plan is not None:
        for cid in {contact.company_id, other.company_id} - {None}:
            with contextlib.suppress(NotFound):
                names["company_id"][cid] = companies_service.get_company(session, ctx.workspace_id, cid).name
        members = {u.id: u.name or u.email for u, _ in workspaces_service.list_members(session, ctx.workspace_id)}
        names["owner_id"] = members
    stages = contacts_service.stage_specs(session, ctx.workspace_id)
    return render(
        request,
        "contact_merge.html",
        language=ctx.language,
        timezone=ctx.timezone,
        status_code=status_code,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        contact=contact,
        other=other,
        q=q,
        candidates=candidates,
        plan=plan,
        names=names,
        labels={s.key: s.label for s in stages},
        error=error,
    )


@router.get("/w/{slug}/contacts/{contact_id}/merge")
def merge_form(
    request: Request,
    ctx: Workspace_,
    session: ReadSession,
    contact_id: int,
    q: str = "",
    other: str = "",
) -> Response:
    ctx.require("edit")
    contact = _contact_or_404(session, ctx.workspace_id, contact_id)
    if contact.id != contact_id:
        return RedirectResponse(f"{ctx.base}/contacts/{contact.id}/merge", status_code=303)
    if not other.strip():
        return _merge_page(request, ctx, session, contact, q=q)
    if not other.strip().isdigit():
        return _merge_page(request, ctx, session, contact, q=q, error="not_a_number", status_code=422)
    other_contact = _contact_or_404(session, ctx.workspace_id, int(other))
    if other_contact.id == contact.id:
        return _merge_page(request, ctx, session, contact, q=q, error="same_contact", status_code=422)
    return _merge_page(request, ctx, session, contact, q=q, other=other_contact)


@router.post("/w/{slug}/contacts/{contact_id}/merge")
async def merge(
    request: Request,
    ctx: Workspace_,
    session: DbSession,
    contact_id: int,
    other_id: Annotated[str, Form(max_length=20)] = "",
    reason: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    ctx.require("edit")
    contact = _contact_or_404(session, ctx.workspace_id, contact_id)
    if not other_id.strip().isdigit():
        return _merge_page(request, ctx, session, contact, error="not_a_number", status_code=422)
    other = _contact_or_404(session, ctx.workspace_id, int(other_id))
    if other.id == contact.id:
        return _merge_page(request, ctx, session, contact, error="same_contact", status_code=422)
    merge_service.merge_contacts(
        session,
        ctx.workspace_id,
        contact.id,
        other.id,
        reason=reason.strip() or "merged in the web interface",
        actor=f"user:{ctx.user.info.user_id} ({ctx.user.info.email})",
    )
    return RedirectResponse(f"{ctx.base}/contacts/{contact.id}?done=merged", status_code=303)
