"""Who is asking: the session cookie, the workspace in the URL and the role there.

Roles (one per workspace membership) and what they may do in the web interface:

========== ========= ================ ============ =========
permission admin     marketer         sales        analyst
========== ========= ================ ============ =========
view       yes       yes              yes          yes        dashboard, contacts, contact pages
edit       yes       yes              yes          no         tags and lifecycle stage of a contact
mail       yes       yes              no           no         the mail catcher
pipeline   yes       yes (read)       yes          yes (read)
settings   yes       no               no           no
========== ========= ================ ============ =========
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from suppilo.accounts import service as accounts
from suppilo.accounts.service import Access, SessionInfo
from suppilo.adapters.web import i18n
from suppilo.workspaces.models import Workspace

SESSION_COOKIE = "suppilo_session"
LOGIN_COOKIE = "suppilo_login"

PERMISSIONS: dict[str, frozenset[str]] = {
    "view": frozenset({"admin", "marketer", "sales", "analyst"}),
    "edit": frozenset({"admin", "marketer", "sales"}),
    "mail": frozenset({"admin", "marketer"}),
    "pipeline": frozenset({"admin", "marketer", "sales", "analyst"}),
    "settings": frozenset({"admin"}),
}


class WebError(Exception):
    """A page that cannot be shown: rendered as an HTML error page with this status."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    """No live session: the browser goes to the login page and comes back to ``next_url`` afterwards."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def safe_next(value: str | None, default: str = "/app/") -> str:
    """A same-site path inside the web interface (no open redirects)."""
    if not value or not value.startswith("/app/") or value.startswith("//") or "\\" in value:
        return default
    return value


def login_url(next_url: str) -> str:
    return "/app/login?next=" + quote(safe_next(next_url), safe="/")


def cookie_secure(request: Request) -> bool:
    """Whether cookies get the Secure flag: served over https (directly or per the public URL)."""
    settings = request.app.state.settings
    return request.url.scheme == "https" or str(settings.public_url).startswith("https://")


def open_session(request: Request) -> Session:
    session: Session = request.app.state.session_factory()
    return session


@dataclass
class WebUser:
    """The signed-in user of a request."""

    info: SessionInfo
    token: str

    @property
    def language(self) -> str:
        return i18n.supported(self.info.language)


@dataclass
class Ctx:
    """A request inside a workspace: the user, their role there and the workspace's settings."""

    user: WebUser
    access: Access
    accesses: list[Access]
    workspace_name: str
    currency: str
    workspace_timezone: str
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.access.slug

    @property
    def workspace_id(self) -> int:
        return self.access.workspace_id

    @property
    def role(self) -> str:
        return self.access.role

    @property
    def language(self) -> str:
        return self.user.language

    @property
    def timezone(self) -> str:
        return self.user.info.timezone if self.user.info.timezone not in ("", "UTC") else self.workspace_timezone

    @property
    def base(self) -> str:
        """The URL prefix of this workspace's pages."""
        return f"/app/w/{self.slug}"

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS.get(permission, frozenset())

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise WebError(403, "forbidden")


def _request_path(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def optional_user(request: Request) -> WebUser | None:
    """The signed-in user, or None (expired and unknown sessions are None)."""
    raw = request.cookies.get(SESSION_COOKIE, "")
    if not raw:
        return None
    with open_session(request) as session:
        info = accounts.load_session(session, raw)
        session.commit()
    return WebUser(info, raw) if info is not None else None


def current_user(request: Request) -> WebUser:
    """The signed-in user; LoginRequired otherwise."""
    user = optional_user(request)
    if user is None:
        raise LoginRequired(_request_path(request))
    return user


User = Annotated[WebUser, Depends(current_user)]


def workspace_ctx(slug: str, request: Request, user: User) -> Ctx:
    """The workspace named in the URL; 404 (never 403) when the user is not a member, so slugs do not leak."""
    with open_session(request) as session:
        access = accounts.access_by_slug(session, user.info.user_id, slug)
        if access is None:
            raise WebError(404, "not_found")
        ws = session.get(Workspace, access.workspace_id)
        assert ws is not None
        all_access = accounts.accesses(session, user.info.user_id)
        if user.info.workspace_id != access.workspace_id:
            accounts.remember_workspace(session, user.info.session_id, access.workspace_id)
        session.commit()
        return Ctx(user, access, all_access, ws.name, ws.currency, ws.timezone)


Workspace_ = Annotated[Ctx, Depends(workspace_ctx)]


class LoginThrottle:
    """Failed logins per email and per client address: after ``limit`` failures within ``window`` seconds
    further attempts are refused until the oldest failure leaves the window (per process)."""

    def __init__(self, limit: int = 10, window: float = 900.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def retry_after(self, *keys: str) -> float:
        """Seconds until another attempt is allowed (0 when allowed now)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                q = self._recent(key, now)
                if len(q) >= self.limit:
                    wait = max(wait, q[0] + self.window - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 100_000:
                self._failures.clear()
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


throttle = LoginThrottle()
