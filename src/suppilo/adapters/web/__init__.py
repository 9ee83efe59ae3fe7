"""The web interface: server-rendered pages (Jinja2, autoescaped) under ``/app``, enhanced by htmx when scripts run.

``mount_web(app)`` adds the pages, the static files (``/app/static``; third-party files such as htmx come from npm
at install time into ``static/vendor``), the security headers and the HTML error pages.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from suppilo.adapters.web import i18n
from suppilo.adapters.web.auth import LoginRequired, WebError, login_url, optional_user
from suppilo.adapters.web.routes import router
from suppilo.adapters.web.security import SecurityHeaders
from suppilo.adapters.web.templating import render

STATIC_DIR = Path(__file__).parent / "static"


def mount_web(app: FastAPI) -> None:
    """Add the web interface to the FastAPI app."""
    app.include_router(router)
    app.mount("/app/static", StaticFiles(directory=STATIC_DIR), name="web-static")

    # Added after the static mount so that it only answers what nothing else under /app did: an HTML 404.
    @app.get("/app/{rest:path}", include_in_schema=False)
    def not_found(rest: str) -> Response:
        raise WebError(404, "not_found")

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        target = login_url(exc.next_url if request.method == "GET" else "/app/")
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(WebError)
    async def _error(request: Request, exc: WebError) -> Response:
        user = optional_user(request)
        language = user.language if user else i18n.negotiate(request.headers.get("accept-language"))
        return render(
            request,
            "error.html",
            language=language,
            status_code=exc.status,
            status=exc.status,
            reason=exc.message,
            user=user,
            csrf=user.info.csrf_token if user else "",
        )
