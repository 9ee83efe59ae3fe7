"""Login, logout, the language switch and the front door (which workspace to open)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from suppilo.accounts import service as accounts
from suppilo.adapters.web import csrf, i18n
from suppilo.adapters.web.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    User,
    cookie_secure,
    open_session,
    optional_user,
    safe_next,
    throttle,
)
from suppilo.adapters.web.templating import render
from suppilo.db.base import utcnow

router = APIRouter()


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_page(
    request: Request, *, language: str, next_url: str, email: str = "", error: str = "", status_code: int = 200
) -> Response:
    token = csrf.new_token()
    response = render(
        request,
        "login.html",
        language=language,
        status_code=status_code,
        next_url=next_url,
        email=email,
        error=error,
        csrf=token,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/app/login",
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request),
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None, lang: str | None = None) -> Response:
    """The login page (a signed-in user goes straight on)."""
    if optional_user(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    language = i18n.supported(lang) if lang else i18n.negotiate(request.headers.get("accept-language"))
    return _login_page(request, language=language, next_url=safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/app/",
    lang: Annotated[str, Form(max_length=8)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Check the password; on success a new session (a new cookie and CSRF token) replaces any old one."""
    language = i18n.supported(lang) if lang else i18n.negotiate(request.headers.get("accept-language"))
    next_url = safe_next(next)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    await csrf.check(request, expected)
    address = email.strip().lower()
    keys = (f"email:{address}", f"ip:{_client(request)}")
    wait = throttle.retry_after(*keys)
    if wait > 0:
        return _login_page(
            request, language=language, next_url=next_url, email=email, error="throttled", status_code=429
        )
    with open_session(request) as session:
        user = accounts.authenticate(session, address, password) if address and password else None
        if user is None:
            session.rollback()
            throttle.failed(*keys)
            return _login_page(
                request, language=language, next_url=next_url, email=email, error="invalid", status_code=400
            )
        _, raw = accounts.start_session(
            session,
            user,
            user_agent=request.headers.get("user-agent", ""),
            now=utcnow(),
            replaces=request.cookies.get(SESSION_COOKIE) or None,
        )
        session.commit()
    throttle.succeeded(keys[0])
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        raw,
        max_age=int(accounts.ABSOLUTE_TIMEOUT.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/app/login")
    return response


@router.post("/logout")
async def logout(request: Request, user: User) -> Response:
    """End the session."""
    await csrf.check(request, user.info.csrf_token)
    with open_session(request) as session:
        accounts.end_session(session, user.token)
        session.commit()
    response = RedirectResponse("/app/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/language")
async def set_language(
    request: Request,
    user: User,
    language: Annotated[str, Form(max_length=8)] = "en",
    next: Annotated[str, Form(max_length=2000)] = "/app/",
) -> Response:
    """Switch the interface language of the signed-in user."""
    await csrf.check(request, user.info.csrf_token)
    with open_session(request) as session:
        accounts.set_language(session, user.info.user_id, i18n.supported(language))
        session.commit()
    return RedirectResponse(safe_next(next), status_code=303)


@router.get("/")
def home(request: Request, user: User) -> Response:
    """Open the workspace used last (or the first one); a user without a workspace is told so."""
    with open_session(request) as session:
        available = accounts.accesses(session, user.info.user_id)
    if not available:
        return render(
            request,
            "no_workspace.html",
            language=user.language,
            user=user,
            csrf=user.info.csrf_token,
            status_code=403,
        )
    chosen = next((a for a in available if a.workspace_id == user.info.workspace_id), available[0])
    return RedirectResponse(f"/app/w/{chosen.slug}/", status_code=303)
