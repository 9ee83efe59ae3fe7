"""Companies: search and filters (name or domain prefix, industry, country) with keyset paging, and the company
page (firmographics, fit score with its explanation, linked contacts, deals)."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from suppilo.adapters.http.deps import ReadSession
from suppilo.adapters.web.auth import WebError, Workspace_
from suppilo.adapters.web.errors import error_text
from suppilo.adapters.web.templating import render
from suppilo.companies import service as companies_service
from suppilo.deals import service as deals_service
from suppilo.errors import DomainError, NotFound
from suppilo.scoring import service as scoring_service
from suppilo.workspaces import service as workspaces_service

router = APIRouter()
PAGE_SIZE = 50
# The industry select's options: a GROUP BY over the workspace's companies (≈ 50 ms at 50,000 companies), kept per
# process for a minute; a new industry appears in the filter within that time.
INDUSTRY_CACHE_SECONDS = 60.0
_industries: dict[int, tuple[float, list[str]]] = {}
_industries_lock = threading.Lock()


def _industry_options(session: Any, workspace_id: int) -> list[str]:
    now = time.monotonic()
    with _industries_lock:
        hit = _industries.get(workspace_id)
    if hit is not None and now - hit[0] < INDUSTRY_CACHE_SECONDS:
        return hit[1]
    values = companies_service.industries(session, workspace_id)
    with _industries_lock:
        if len(_industries) > 10_000:
            _industries.clear()
        _industries[workspace_id] = (now, values)
    return values


def _query(**params: Any) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


@router.get("/w/{slug}/companies")
def companies(
    request: Request,
    ctx: Workspace_,
    session: ReadSession,
    q: str = "",
    industry: str = "",
    country: str = "",
    cursor: str | None = None,
) -> Response:
    ctx.require("view")
    filters = {"q": q[:200], "industry": industry[:100], "country": country[:10]}
    errors: dict[str, str] = {}
    page = None
    try:
        page = companies_service.browse_companies(
            session,
            ctx.workspace_id,
            q=filters["q"],
            industry=filters["industry"],
            country=filters["country"],
            cursor=cursor,
            limit=PAGE_SIZE,
        )
    except DomainError as exc:
        errors[exc.field or "q"] = error_text(exc, ctx.language)
        if exc.field == "cursor":
            page = companies_service.browse_companies(
                session, ctx.workspace_id, q=filters["q"], industry=filters["industry"], country=filters["country"]
            )
    next_url = None
    if page is not None and page.next_cursor:
        next_url = f"{ctx.base}/companies?{_query(**filters, cursor=page.next_cursor)}"
    return render(
        request,
        "companies.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        items=page.items if page is not None else [],
        industries=_industry_options(session, ctx.workspace_id),
        filters=filters,
        errors=errors,
        next_url=next_url,
        first_url=f"{ctx.base}/companies?{_query(**filters)}" if cursor else None,
        status_code=422 if errors and page is None else 200,
    )


@router.get("/w/{slug}/companies/{company_id}")
def company_page(request: Request, ctx: Workspace_, session: ReadSession, company_id: int) -> Response:
    ctx.require("view")
    try:
        company = companies_service.get_company(session, ctx.workspace_id, company_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    contacts, more_contacts = companies_service.company_contacts(session, ctx.workspace_id, company.id)
    deals = companies_service.company_deals(session, ctx.workspace_id, company.id, [c.id for c in contacts])
    deal_stages = {
        st.id: st.label
        for sts in deals_service.pipeline_stages(
            session, ctx.workspace_id, sorted({d.pipeline_id for d in deals})
        ).values()
        for st in sts
    }
    owner = None
    if company.owner_id is not None:
        members = {u.id: u.name or u.email for u, _ in workspaces_service.list_members(session, ctx.workspace_id)}
        owner = members.get(company.owner_id)
    score = scoring_service.company_score(session, ctx.workspace_id, company.id)
    contact_names = {c.id: c for c in contacts}
    return render(
        request,
        "company.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        company=company,
        owner=owner,
        score=score,
        contacts=contacts,
        more_contacts=more_contacts,
        contact_names=contact_names,
        deals=deals,
        deal_stages=deal_stages,
    )
