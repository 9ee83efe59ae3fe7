"""HTTP routes: segments — dynamic segments and static lists, count preview, membership and its history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer
from suppilo.db.base import utcnow
from suppilo.segments import service
from suppilo.segments.schemas import (
    ChangePage,
    ChangeRead,
    ContactSegmentRead,
    MemberPage,
    MemberRead,
    MembersIn,
    MembersOut,
    PreviewIn,
    PreviewOut,
    RefreshOut,
    SegmentCreate,
    SegmentPage,
    SegmentRead,
    SegmentUpdate,
)

router = APIRouter(prefix="/api/v1", tags=["segments"])

Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("/segments", response_model=SegmentRead, status_code=http.HTTP_201_CREATED)
def create_segment(data: SegmentCreate, principal: Writer, session: DbSession) -> SegmentRead:
    """Create a dynamic segment (evaluated at once) or a static list; a bad filter is answered with its path."""
    return SegmentRead.model_validate(
        service.create_segment(session, principal.workspace_id, data, actor=f"key:{principal.key_id}")
    )


@router.get("/segments", response_model=SegmentPage)
def list_segments(principal: Reader, session: ReadSession) -> SegmentPage:
    """Every segment of the workspace, in id order."""
    return SegmentPage(
        items=[SegmentRead.model_validate(s) for s in service.list_segments(session, principal.workspace_id)]
    )


@router.post("/segments/preview", response_model=PreviewOut)
def preview(data: PreviewIn, principal: Reader, session: ReadSession) -> PreviewOut:
    """How many contacts a filter matches now (for a live count while it is edited; nothing is stored)."""
    return PreviewOut(count=service.preview_count(session, principal.workspace_id, data.filter))


@router.get("/segments/{segment_id}", response_model=SegmentRead)
def read_segment(segment_id: int, principal: Reader, session: ReadSession) -> SegmentRead:
    """One segment."""
    return SegmentRead.model_validate(service.get_segment(session, principal.workspace_id, segment_id))


@router.patch("/segments/{segment_id}", response_model=SegmentRead)
def update_segment(segment_id: int, data: SegmentUpdate, principal: Writer, session: DbSession) -> SegmentRead:
    """Rename, describe or re-filter a segment (re-evaluated with the segments that use it)."""
    return SegmentRead.model_validate(
        service.update_segment(session, principal.workspace_id, segment_id, data, actor=f"key:{principal.key_id}")
    )


@router.delete("/segments/{segment_id}", status_code=http.HTTP_204_NO_CONTENT)
def delete_segment(segment_id: int, principal: Writer, session: DbSession) -> Response:
    """Remove a segment with its membership and history (409 while another segment uses it)."""
    service.delete_segment(session, principal.workspace_id, segment_id, actor=f"key:{principal.key_id}")
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.post("/segments/{segment_id}/refresh", response_model=RefreshOut)
def refresh_segment(segment_id: int, principal: Writer, session: DbSession) -> RefreshOut:
    """Evaluate a segment in full now and store who entered and exited."""
    result = service.refresh_segment(session, principal.workspace_id, segment_id, utcnow(), reason="manual")
    seg = service.get_segment(session, principal.workspace_id, segment_id)
    return RefreshOut(
        segment_id=seg.id,
        entered=len(result.entered.get(seg.id, [])),
        exited=len(result.exited.get(seg.id, [])),
        member_count=seg.member_count,
    )


@router.get("/segments/{segment_id}/members", response_model=MemberPage)
def list_members(
    segment_id: int, principal: Reader, session: ReadSession, cursor: str | None = None, limit: Limit = 100
) -> MemberPage:
    """Members by contact id, a page at a time."""
    rows, next_cursor = service.list_members(session, principal.workspace_id, segment_id, cursor=cursor, limit=limit)
    return MemberPage(
        items=[MemberRead(contact_id=r.contact_id, entered_at=r.entered_at) for r in rows], next_cursor=next_cursor
    )


@router.post("/segments/{segment_id}/members", response_model=MembersOut)
def add_members(segment_id: int, data: MembersIn, principal: Writer, session: DbSession) -> MembersOut:
    """Add contacts to a static list."""
    changed = service.add_members(session, principal.workspace_id, segment_id, data.contact_ids)
    seg = service.get_segment(session, principal.workspace_id, segment_id)
    return MembersOut(changed=changed, member_count=seg.member_count)


@router.delete("/segments/{segment_id}/members", response_model=MembersOut)
def remove_members(segment_id: int, data: MembersIn, principal: Writer, session: DbSession) -> MembersOut:
    """Remove contacts from a static list."""
    changed = service.remove_members(session, principal.workspace_id, segment_id, data.contact_ids)
    seg = service.get_segment(session, principal.workspace_id, segment_id)
    return MembersOut(changed=changed, member_count=seg.member_count)


@router.get("/segments/{segment_id}/history", response_model=ChangePage)
def history(
    segment_id: int,
    principal: Reader,
    session: ReadSession,
    contact_id: int | None = None,
    cursor: str | None = None,
    limit: Limit = 100,
) -> ChangePage:
    """Who entered and exited the segment, newest first."""
    rows, next_cursor = service.history(
        session, principal.workspace_id, segment_id, contact_id=contact_id, cursor=cursor, limit=limit
    )
    return ChangePage(items=[ChangeRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/contacts/{contact_id}/segments", response_model=list[ContactSegmentRead])
def contact_segments(contact_id: int, principal: Reader, session: ReadSession) -> list[ContactSegmentRead]:
    """The segments a contact is in now."""
    return [
        ContactSegmentRead(segment_id=seg.id, name=seg.name, kind=seg.kind, entered_at=at)
        for seg, at in service.contact_segments(session, principal.workspace_id, contact_id)
    ]
