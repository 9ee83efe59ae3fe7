"""The pipeline board: deals by stage with counts and sums, moved by drag and drop (app.js) or, without a mouse or
scripts, by each card's own form (stage select and a Move button)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from suppilo.adapters.http.deps import DbSession
from suppilo.adapters.web import csrf
from suppilo.adapters.web.auth import WebError, Workspace_
from suppilo.adapters.web.errors import error_text
from suppilo.adapters.web.templating import render
from suppilo.contacts.models import Contact
from suppilo.deals import service as deals_service
from suppilo.deals.schemas import DealMove
from suppilo.errors import Conflict, DomainError, NotFound

router = APIRouter()
PER_STAGE = 30


@router.get("/w/{slug}/pipeline")
def board(
    request: Request, ctx: Workspace_, session: DbSession, pipeline: int | None = None, moved: int | None = None
) -> Response:
    ctx.require("pipeline")
    default = deals_service.ensure_default_pipeline(session, ctx.workspace_id)
    pipelines = deals_service.list_pipelines(session, ctx.workspace_id)
    chosen = next((p for p in pipelines if p.id == pipeline), default)
    columns = deals_service.board(session, ctx.workspace_id, chosen.id, per_stage=PER_STAGE)
    contact_ids = sorted({d.contact_id for _, _, _, deals in columns for d in deals if d.contact_id is not None})
    names: dict[int, str] = {}
    if contact_ids:
        rows = session.execute(
            select(Contact.id, Contact.first_name, Contact.last_name, Contact.email).where(
                Contact.workspace_id == ctx.workspace_id, Contact.id.in_(contact_ids)
            )
        )
        for cid, first, last, email in rows:
            names[cid] = " ".join(p for p in (first, last) if p) or email or f"#{cid}"
    return render(
        request,
        "pipeline.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        pipelines=pipelines,
        pipeline=chosen,
        columns=columns,
        stages=[stage for stage, _, _, _ in columns],
        contact_names=names,
        moved=moved,
    )


@router.post("/w/{slug}/deals/{deal_id}/move")
async def move(
    request: Request,
    ctx: Workspace_,
    session: DbSession,
    deal_id: int,
    stage_id: Annotated[int, Form()],
    version: Annotated[int | None, Form()] = None,
    lost_reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Move a deal; a stale ``version`` (someone moved it meanwhile) is refused with 409."""
    await csrf.check(request, ctx.user.info.csrf_token)
    ctx.require("edit")
    try:
        deal = deals_service.move_deal(
            session,
            ctx.workspace_id,
            deal_id,
            DealMove(stage_id=stage_id, lost_reason=lost_reason.strip() or None, version=version),
            actor=f"user:{ctx.user.info.user_id} ({ctx.user.info.email})",
        )
    except NotFound as exc:
        raise WebError(404, "not_found") from exc
    except Conflict as exc:
        raise WebError(409, error_text(exc, ctx.language)) from exc
    except DomainError as exc:
        raise WebError(422, error_text(exc, ctx.language)) from exc
    return RedirectResponse(f"{ctx.base}/pipeline?pipeline={deal.pipeline_id}&moved={deal.id}", status_code=303)
