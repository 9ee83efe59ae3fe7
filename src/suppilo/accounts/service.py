"""Account use cases: users with argon2 password hashes, authentication, login sessions and workspace access.

Sessions are server-side rows (``LoginSession``): the browser holds a 256-bit random token, the database its
SHA-256. A session ends at logout, after ``idle`` without a request, or ``absolute`` after login, whichever is
first. Services flush, never commit.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from suppilo.accounts.models import LoginSession
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.models import Membership, User, Workspace

ROLES = ("admin", "marketer", "sales", "analyst")
LANGUAGES = ("en", "sv", "fi", "da", "lv")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
IDLE_TIMEOUT = timedelta(hours=2)
ABSOLUTE_TIMEOUT = timedelta(hours=12)
# last_seen_at is written at most this often, so reading pages does not write on every request.
TOUCH_EVERY = timedelta(seconds=60)

_hasher = PasswordHasher()
# Verified when the email is unknown, so a wrong email costs as long as a wrong password (no user enumeration).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(DomainError):
    """A refused account operation."""


@dataclass(frozen=True, slots=True)
class Access:
    """A user's role in one workspace."""

    workspace_id: int
    slug: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A live session with its user."""

    session_id: int
    user_id: int
    email: str
    name: str
    language: str
    timezone: str
    workspace_id: int | None
    csrf_token: str
    created_at: datetime


def hash_token(raw: str) -> str:
    """SHA-256 hex of a session token."""
    return hashlib.sha256(raw.encode()).hexdigest()


def normalize_email(email: str) -> str:
    """Lower-cased, trimmed; refused when it is not an address."""
    value = (email or "").strip().lower()
    if "@" not in value or len(value) > 320 or value.startswith("@") or value.endswith("@"):
        raise AccountError("email", f"{email!r} is not an email address", code="invalid_email")
    return value


def check_password(password: str) -> None:
    """Refuse a password that is too short or too long."""
    if len(password) < MIN_PASSWORD:
        raise AccountError("password", f"a password needs at least {MIN_PASSWORD} characters", code="weak_password")
    if len(password) > MAX_PASSWORD:
        raise AccountError("password", f"a password may have at most {MAX_PASSWORD} characters")


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (salted, with the library's current cost parameters)."""
    return _hasher.hash(password)


def get_user_by_email(session: Session, email: str) -> User | None:
    """The user with this email (case-insensitive), if any."""
    return session.scalar(select(User).where(User.email == (email or "").strip().lower()))


def create_user(
    session: Session, *, email: str, password: str, name: str = "", language: str = "en", timezone: str = "UTC"
) -> User:
    """A new user who can log in; Conflict when the email is taken."""
    address = normalize_email(email)
    check_password(password)
    if language not in LANGUAGES:
        raise AccountError("language", f"language must be one of {', '.join(LANGUAGES)}")
    if get_user_by_email(session, address) is not None:
        raise Conflict("email", f"a user with email {address!r} already exists", code="email_taken")
    user = workspaces_service.create_user(session, email=address, name=name, password_hash=hash_password(password))
    user.language = language
    user.timezone = timezone
    session.flush()
    return user


def set_password(session: Session, user_id: int, password: str) -> None:
    """Replace a user's password; every session of the user ends."""
    check_password(password)
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user_id", f"user {user_id} not found")
    user.password_hash = hash_password(password)
    session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
    session.flush()


def set_language(session: Session, user_id: int, language: str) -> None:
    """The language of a user's interface."""
    if language not in LANGUAGES:
        raise AccountError("language", f"language must be one of {', '.join(LANGUAGES)}")
    session.execute(update(User).where(User.id == user_id).values(language=language))


def grant(session: Session, workspace_id: int, user_id: int, role: str) -> Membership:
    """Give a user ``role`` in a workspace (or change the role they have there)."""
    if role not in ROLES:
        raise AccountError("role", f"role must be one of {', '.join(ROLES)}; got {role!r}")
    existing = session.scalar(
        select(Membership).where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
    )
    if existing is not None:
        existing.role = role
        session.flush()
        return existing
    return workspaces_service.add_member(session, workspace_id, user_id, role)


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this email and password, else None (the same work is done for an unknown email).

    A hash made with older cost parameters is replaced after a successful check."""
    user = get_user_by_email(session, email)
    stored = user.password_hash if user is not None and user.password_hash else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None or stored is None or not user.is_active:
        return None
    if _hasher.check_needs_rehash(stored):
        user.password_hash = hash_password(password)
        session.flush()
    return user


def accesses(session: Session, user_id: int) -> list[Access]:
    """The workspaces a user may open, with the role there, by workspace name."""
    rows = session.execute(
        select(Workspace.id, Workspace.slug, Workspace.name, Membership.role)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user_id)
        .order_by(Workspace.name, Workspace.id)
    )
    return [Access(r.id, r.slug, r.name, r.role) for r in rows]


def access_by_slug(session: Session, user_id: int, slug: str) -> Access | None:
    """The user's access to the workspace with ``slug``; None when there is no such workspace or no membership."""
    row = session.execute(
        select(Workspace.id, Workspace.slug, Workspace.name, Membership.role)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user_id, Workspace.slug == slug)
    ).first()
    return Access(row.id, row.slug, row.name, row.role) if row is not None else None


def start_session(
    session: Session, user: User, *, user_agent: str = "", now: datetime | None = None, replaces: str | None = None
) -> tuple[LoginSession, str]:
    """A new session for ``user`` (the one whose token is ``replaces`` ends: no fixation); returns (row, raw token)."""
    now = now or utcnow()
    if replaces:
        end_session(session, replaces)
    first = accesses(session, user.id)
    raw = secrets.token_urlsafe(32)
    row = LoginSession(
        token_hash=hash_token(raw),
        user_id=user.id,
        workspace_id=first[0].workspace_id if first else None,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
        expires_at=now + ABSOLUTE_TIMEOUT,
        user_agent=(user_agent or "")[:300],
    )
    session.add(row)
    # Expired sessions of this user go when they log in again.
    session.execute(delete(LoginSession).where(LoginSession.user_id == user.id, LoginSession.expires_at < now))
    session.flush()
    return row, raw


def load_session(
    session: Session, raw: str, *, now: datetime | None = None, idle: timedelta = IDLE_TIMEOUT
) -> SessionInfo | None:
    """The live session of a raw token (its last-seen time moved on), else None; an expired one is deleted."""
    if not raw or len(raw) > 200:
        return None
    now = now or utcnow()
    row = session.execute(
        select(LoginSession, User)
        .join(User, User.id == LoginSession.user_id)
        .where(LoginSession.token_hash == hash_token(raw))
    ).first()
    if row is None:
        return None
    login, user = row
    if login.expires_at <= now or login.last_seen_at + idle <= now or not user.is_active:
        session.delete(login)
        session.flush()
        return None
    if now - login.last_seen_at >= TOUCH_EVERY:
        login.last_seen_at = now
        session.flush()
    return SessionInfo(
        session_id=login.id,
        user_id=user.id,
        email=user.email,
        name=user.name,
        language=user.language,
        timezone=user.timezone,
        workspace_id=login.workspace_id,
        csrf_token=login.csrf_token,
        created_at=login.created_at,
    )


def remember_workspace(session: Session, session_id: int, workspace_id: int) -> None:
    """Record the workspace a session opened last."""
    session.execute(update(LoginSession).where(LoginSession.id == session_id).values(workspace_id=workspace_id))


def end_session(session: Session, raw: str) -> None:
    """Log out: the session of this token stops working."""
    session.execute(delete(LoginSession).where(LoginSession.token_hash == hash_token(raw)))


def end_all_sessions(session: Session, user_id: int) -> int:
    """Log a user out everywhere; returns how many sessions ended."""
    result = session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
    return rowcount(result)
