"""CSRF protection: a synchronizer token tied to the login session, required on every state-changing request.

Forms carry it as the hidden field ``csrf_token``; htmx requests send it as ``X-CSRF-Token`` (app.js reads it
from ``<meta name="csrf-token">``). A cross-origin ``Origin`` header is refused as well. The login form, which has
no session yet, uses a double-submit token: a random value in a SameSite=Strict cookie that the form must echo.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

from suppilo.adapters.web.auth import WebError

FIELD = "csrf_token"
HEADER = "x-csrf-token"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    own = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
    public = str(request.app.state.settings.public_url).rstrip("/")
    return origin.rstrip("/") in (own, public)


async def submitted_token(request: Request) -> str:
    """The token a request carries (header first, then the form field)."""
    header = request.headers.get(HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def check(request: Request, expected: str) -> None:
    """403 unless the request carries ``expected`` and comes from this origin."""
    if not _same_origin(request):
        raise WebError(403, "csrf")
    given = await submitted_token(request)
    if not given or not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise WebError(403, "csrf")
