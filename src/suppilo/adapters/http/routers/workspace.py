"""The current workspace, its API keys and lifecycle stages."""

from __future__ import annotations

from fastapi import APIRouter

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession, clear_key_cache
from suppilo.workspaces import service
from suppilo.workspaces.schemas import ApiKeyRead, WorkspaceRead, WorkspaceUpdate

router = APIRouter(prefix="/api/v1", tags=["workspace"])


@router.get("/workspace", response_model=WorkspaceRead)
def read_workspace(principal: Reader, session: ReadSession) -> WorkspaceRead:
    """The workspace this key belongs to."""
    return WorkspaceRead.model_validate(service.get_workspace(session, principal.workspace_id))


@router.patch("/workspace", response_model=WorkspaceRead)
def update_workspace(data: WorkspaceUpdate, principal: Admin, session: DbSession) -> WorkspaceRead:
    """Change the workspace's language, currency, time zone, country or postal address."""
    return WorkspaceRead.model_validate(service.update_workspace(session, principal.workspace_id, data))


@router.get("/api-keys", response_model=list[ApiKeyRead])
def list_keys(principal: Admin, session: ReadSession) -> list[ApiKeyRead]:
    """The workspace's API keys (never their secrets)."""
    return [ApiKeyRead.model_validate(k) for k in service.list_api_keys(session, principal.workspace_id)]


@router.delete("/api-keys/{key_id}", response_model=ApiKeyRead)
def revoke_key(key_id: int, principal: Admin, session: DbSession) -> ApiKeyRead:
    """Revoke a key."""
    key = service.revoke_api_key(session, principal.workspace_id, key_id)
    clear_key_cache()
    return ApiKeyRead.model_validate(key)
