"""Workspace use cases: create with defaults, update, API keys (hashed), audit entries."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.db.base import utcnow
from suppilo.errors import DomainError, NotFound
from suppilo.workspaces.models import ApiKey, AuditLog, Membership, User, Workspace
from suppilo.workspaces.schemas import SCOPES, WorkspaceCreate, WorkspaceUpdate

# A scope grants the ones listed with it.
IMPLIED_SCOPES: dict[str, frozenset[str]] = {
    "track": frozenset({"track"}),
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write", "track"}),
    "admin": frozenset({"read", "write", "track", "admin"}),
}


class WorkspaceError(DomainError):
    """A refused workspace operation."""


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """Who an API key speaks for."""

    workspace_id: int
    key_id: int
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """Whether this key has ``scope``."""
        return scope in self.scopes


def hash_key(raw: str) -> str:
    """SHA-256 hex of a raw key."""
    return hashlib.sha256(raw.encode()).hexdigest()


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise WorkspaceError("timezone", f"{name!r} is not an IANA time zone") from exc


def create_workspace(session: Session, data: WorkspaceCreate) -> Workspace:
    """Create a workspace with the default lifecycle stages and channel rules."""
    from suppilo.contacts import service as contacts_service
    from suppilo.events import service as events_service
    from suppilo.messaging import service as messaging_service

    _check_timezone(data.timezone)
    if session.scalar(select(Workspace.id).where(Workspace.slug == data.slug)) is not None:
        raise WorkspaceError("slug", f"a workspace with slug {data.slug!r} already exists")
    workspace = Workspace(**data.model_dump())
    session.add(workspace)
    session.flush()
    contacts_service.seed_default_stages(session, workspace.id)
    events_service.seed_default_channel_rules(session, workspace.id)
    messaging_service.install_default_templates(session, workspace.id)
    return workspace


def get_workspace(session: Session, workspace_id: int) -> Workspace:
    """The workspace with this id (it exists: callers hold a principal for it)."""
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise LookupError(f"workspace {workspace_id} does not exist")
    return workspace


def get_workspace_by_slug(session: Session, slug: str) -> Workspace | None:
    """The workspace with this slug, if any."""
    return session.scalar(select(Workspace).where(Workspace.slug == slug))


def update_workspace(session: Session, workspace_id: int, data: WorkspaceUpdate) -> Workspace:
    """Change a workspace's settings."""
    workspace = get_workspace(session, workspace_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("timezone"):
        _check_timezone(changes["timezone"])
    policy_changes: dict[str, Any] = {k: changes.pop(k) for k in ("frequency_cap", "quiet_hours") if k in changes}
    if policy_changes:
        from suppilo.messaging import policies

        settings = dict(workspace.settings or {})
        for key, value in policies.validate_settings(policy_changes).items():
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = value
        workspace.settings = settings
    for key, value in changes.items():
        setattr(workspace, key, value)
    session.flush()
    return workspace


def create_api_key(session: Session, workspace_id: int, *, scopes: list[str], name: str = "") -> tuple[ApiKey, str]:
    """A new key; returns the row and the raw key, which is shown once and never stored."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise WorkspaceError("scopes", f"scopes must be among {', '.join(SCOPES)}; got {scopes!r}")
    # Write keys ("wk_") are meant to be public in web pages; secret keys ("sk_") are not.
    raw = f"{'wk' if set(scopes) == {'track'} else 'sk'}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        workspace_id=workspace_id,
        name=name,
        prefix=raw[:10],
        key_hash=hash_key(raw),
        scopes=sorted(set(scopes)),
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    record_audit(
        session,
        workspace_id,
        actor="system",
        action="api_key.created",
        subject_type="api_key",
        subject_id=key.id,
        details={"scopes": key.scopes, "name": name},
    )
    return key, raw


def list_api_keys(session: Session, workspace_id: int) -> list[ApiKey]:
    """The workspace's keys, newest first."""
    return list(session.scalars(select(ApiKey).where(ApiKey.workspace_id == workspace_id).order_by(ApiKey.id.desc())))


def revoke_api_key(session: Session, workspace_id: int, key_id: int) -> ApiKey:
    """Revoke a key of this workspace."""
    key = session.scalar(select(ApiKey).where(ApiKey.workspace_id == workspace_id, ApiKey.id == key_id))
    if key is None:
        raise NotFound("key_id", f"API key {key_id} not found")
    key.revoked_at = utcnow()
    record_audit(
        session, workspace_id, actor="system", action="api_key.revoked", subject_type="api_key", subject_id=key.id
    )
    session.flush()
    return key


def authenticate_key(session: Session, raw: str) -> KeyPrincipal | None:
    """The principal of a raw key, or None when unknown or revoked."""
    row = session.execute(
        select(ApiKey.id, ApiKey.workspace_id, ApiKey.scopes, ApiKey.revoked_at).where(ApiKey.key_hash == hash_key(raw))
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    granted: set[str] = set()
    for scope in row.scopes:
        granted |= IMPLIED_SCOPES.get(scope, frozenset())
    return KeyPrincipal(workspace_id=row.workspace_id, key_id=row.id, scopes=frozenset(granted))


def create_user(session: Session, *, email: str, name: str, password_hash: str | None) -> User:
    """A user (global, joins workspaces through memberships)."""
    user = User(email=email.strip().lower(), name=name, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def add_member(session: Session, workspace_id: int, user_id: int, role: str) -> Membership:
    """Give a user a role in a workspace."""
    if role not in ("admin", "marketer", "sales", "analyst"):
        raise WorkspaceError("role", f"role must be admin, marketer, sales or analyst; got {role!r}")
    membership = Membership(workspace_id=workspace_id, user_id=user_id, role=role)
    session.add(membership)
    session.flush()
    return membership


def list_members(session: Session, workspace_id: int) -> list[tuple[User, str]]:
    """The users of a workspace with their roles."""
    rows = session.execute(
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == workspace_id)
        .order_by(User.id)
    )
    return [(user, role) for user, role in rows]


def record_audit(
    session: Session,
    workspace_id: int,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: int | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Append an audit-log entry."""
    session.add(
        AuditLog(
            workspace_id=workspace_id,
            occurred_at=at or utcnow(),
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            details=details or {},
        )
    )
