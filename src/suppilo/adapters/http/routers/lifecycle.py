"""HTTP routes: the lifecycle stage set, manual stage moves and stage history."""

from __future__ import annotations

from fastapi import APIRouter

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession, Writer
from suppilo.adapters.http.routers.contacts import actor_of
from suppilo.contacts import service
from suppilo.contacts.schemas import ContactRead, LifecycleStageRead, StageChangeRead, StageMoveIn, StageSetIn

router = APIRouter(prefix="/api/v1", tags=["lifecycle"])


@router.get("/lifecycle-stages", response_model=list[LifecycleStageRead])
def list_stages(principal: Reader, session: ReadSession) -> list[LifecycleStageRead]:
    """The workspace's stages in order, with the number of contacts in each."""
    return service.list_stages(session, principal.workspace_id)


@router.put("/lifecycle-stages", response_model=list[LifecycleStageRead])
def replace_stages(data: StageSetIn, principal: Admin, session: DbSession) -> list[LifecycleStageRead]:
    """Replace the stage set; contacts in a removed stage need ``move_to`` (their moves are recorded)."""
    return service.replace_stages(session, principal.workspace_id, data, actor=actor_of(session, principal))


@router.post("/contacts/{contact_id}/stage", response_model=ContactRead)
def move_stage(contact_id: int, data: StageMoveIn, principal: Writer, session: DbSession) -> ContactRead:
    """Move a contact to another stage by hand (recorded with the reason and this key as actor)."""
    contact, _ = service.move_contact_stage(
        session, principal.workspace_id, contact_id, data.stage, reason=data.reason, actor=actor_of(session, principal)
    )
    return service.contact_read(session, contact)


@router.get("/contacts/{contact_id}/stage-history", response_model=list[StageChangeRead])
def stage_history(contact_id: int, principal: Reader, session: ReadSession) -> list[StageChangeRead]:
    """The contact's stage changes, newest first."""
    return [
        StageChangeRead.model_validate(c) for c in service.stage_history(session, principal.workspace_id, contact_id)
    ]
