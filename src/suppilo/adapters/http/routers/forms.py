"""HTTP routes: forms (API and public pages), the tracking snippet ``/t.js`` and the image pixel ``/v1/p.gif``."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer, principal_for_key
from suppilo.adapters.http.errors import ApiError, error_body
from suppilo.capture import i18n
from suppilo.capture import service as capture_service
from suppilo.capture.models import Form
from suppilo.capture.ratelimit import SlidingWindowLimiter
from suppilo.capture.schemas import (
    ANONYMOUS_ID_FIELD,
    CONSENT_FIELD,
    HONEYPOT_FIELD,
    FormCreate,
    FormRead,
    FormSubmissionRead,
    FormUpdate,
)
from suppilo.db.session import unit_of_work
from suppilo.errors import DomainError
from suppilo.workspaces import service as workspaces_service

router = APIRouter(tags=["capture"])
log = logging.getLogger(__name__)

CAPTURE_DIR = Path(__file__).resolve().parents[3] / "capture"
MAX_SUBMISSION_BYTES = 64 * 1024
TRANSPARENT_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Accept",
    "Access-Control-Max-Age": "86400",
    "Vary": "Origin",
}
AUTOCOMPLETE = {
    "email": "email",
    "first_name": "given-name",
    "last_name": "family-name",
    "phone": "tel",
    "job_title": "organization-title",
    "country": "country",
    "language": "language",
    "company_name": "organization",
}

_templates = Environment(
    loader=FileSystemLoader(str(CAPTURE_DIR / "templates")),
    autoescape=select_autoescape(enabled_extensions=("html",), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


@lru_cache(maxsize=1)
def _css() -> tuple[str, str]:
    """The hosted pages' stylesheet and its CSP hash (the only inline content the pages carry)."""
    css = (CAPTURE_DIR / "templates" / "style.html").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return css, f"'sha256-{digest}'"


@lru_cache(maxsize=1)
def _snippet_source() -> str:
    return (CAPTURE_DIR / "snippet.js").read_text(encoding="utf-8")


def _js_json(value: Any) -> str:
    """JSON safe to place inside a script (no ``</script>``, no U+2028/2029 surprises)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _snippet(config: dict[str, Any]) -> str:
    return _snippet_source().replace("__SUPPILO_CONFIG__", _js_json(config))


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def _csp(form: Form | None) -> str:
    form_action = "'self'"
    redirect_origin = _origin(form.redirect_url) if form is not None else None
    if redirect_origin:
        form_action += f" {redirect_origin}"
    return (
        f"default-src 'none'; style-src {_css()[1]}; img-src 'self' data:; form-action {form_action}; "
        "base-uri 'none'; object-src 'none'; script-src 'none'"
    )


def _page(template: str, *, status: int, form: Form | None, lang: str, **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(
        css=_css()[0], lang=lang, texts=i18n.texts(lang), form=form, **context
    )
    headers = {
        "Content-Security-Policy": _csp(form),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(html, status_code=status, headers=headers)


def _message_page(status: int, lang: str, title: str, message: str, *, heading: str | None = None) -> HTMLResponse:
    role = "status" if status < 400 else "alert"
    return _page(
        "message.html", status=status, form=None, lang=lang, title=title, heading=heading, message=message, role=role
    )


def _not_found_page(lang: str) -> HTMLResponse:
    title = i18n.t(lang, "not_found_title")
    return _message_page(404, lang, title, i18n.t(lang, "not_found_text"), heading=title)


def _read(form: Form, request: Request) -> FormRead:
    out = FormRead.model_validate(form)
    base = str(request.base_url).rstrip("/")
    out.hosted_url = f"{base}/f/{form.public_key}"
    out.embed_url = f"{base}/f/{form.public_key}/embed.js"
    return out


# --- API ----------------------------------------------------------------------------------------------------------


@router.get("/api/v1/forms", response_model=list[FormRead])
def list_forms(request: Request, principal: Reader, session: ReadSession) -> list[FormRead]:
    """The workspace's forms, newest first."""
    return [_read(f, request) for f in capture_service.list_forms(session, principal.workspace_id)]


@router.post("/api/v1/forms", response_model=FormRead, status_code=201)
def create_form(data: FormCreate, request: Request, principal: Writer, session: DbSession) -> FormRead:
    """Create a form; the answer carries its hosted page and embed script URLs."""
    return _read(capture_service.create_form(session, principal.workspace_id, data), request)


@router.get("/api/v1/forms/{form_id}", response_model=FormRead)
def get_form(form_id: int, request: Request, principal: Reader, session: ReadSession) -> FormRead:
    """One form."""
    return _read(capture_service.get_form(session, principal.workspace_id, form_id), request)


@router.patch("/api/v1/forms/{form_id}", response_model=FormRead)
def update_form(form_id: int, data: FormUpdate, request: Request, principal: Writer, session: DbSession) -> FormRead:
    """Change a form."""
    return _read(capture_service.update_form(session, principal.workspace_id, form_id, data), request)


@router.delete("/api/v1/forms/{form_id}", status_code=204)
def delete_form(form_id: int, principal: Writer, session: DbSession) -> Response:
    """Delete a form and its submissions."""
    capture_service.delete_form(session, principal.workspace_id, form_id)
    return Response(status_code=204)


@router.get("/api/v1/forms/{form_id}/submissions", response_model=list[FormSubmissionRead])
def list_submissions(
    form_id: int, principal: Reader, session: ReadSession, limit: int = Query(default=100, ge=1, le=1000)
) -> list[FormSubmissionRead]:
    """A form's latest submissions, with the consent text each person saw."""
    rows = capture_service.list_submissions(session, principal.workspace_id, form_id, limit=limit)
    return [FormSubmissionRead.model_validate(r) for r in rows]


# --- the tracking snippet and the pixel ------------------------------------------------------------------------


@router.get("/t.js", include_in_schema=False)
def tracking_snippet(request: Request, k: str | None = Query(default=None, max_length=200)) -> Response:
    """The tracking snippet; ``?k=<write key>`` embeds the workspace's consent requirement."""
    config: dict[str, Any] = {"host": str(request.base_url).rstrip("/")}
    principal = principal_for_key(request, k) if k else None
    if principal is not None and principal.allows("track"):
        with request.app.state.read_session_factory() as session:
            workspace = workspaces_service.get_workspace(session, principal.workspace_id)
            config["requireConsent"] = bool(workspace.require_tracking_consent)
        config["writeKey"] = k
    return Response(
        _snippet(config),
        media_type="application/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/v1/p.gif", include_in_schema=False)
def pixel(
    request: Request,
    k: str | None = Query(default=None, max_length=200),
    u: str | None = Query(default=None, max_length=4000),
    r: str | None = Query(default=None, max_length=4000),
    a: str | None = Query(default=None, max_length=200),
    t: str | None = Query(default=None, max_length=500),
) -> Response:
    """A 1×1 transparent GIF that records a page view; a bad or missing key records nothing."""
    principal = principal_for_key(request, k) if k else None
    if principal is not None and principal.allows("track"):
        try:
            with unit_of_work(request.app.state.session_factory) as session:
                capture_service.record_pixel_view(
                    session,
                    principal.workspace_id,
                    url=u,
                    referrer=r,
                    anonymous_id=a,
                    title=t,
                    user_agent=request.headers.get("user-agent"),
                    ip=request.client.host if request.client else None,
                )
        except DomainError as exc:
            log.info("pixel view not recorded: %s", exc.message)
    return Response(TRANSPARENT_GIF, media_type="image/gif", headers=NO_CACHE)


# --- public forms ------------------------------------------------------------------------------------------------


def _limiter(request: Request) -> SlidingWindowLimiter:
    limiter: SlidingWindowLimiter | None = getattr(request.app.state, "form_rate_limiter", None)
    if limiter is None:
        limiter = SlidingWindowLimiter(request.app.state.settings.form_rate_limit_per_minute, 60.0)
        request.app.state.form_rate_limiter = limiter
    return limiter


def _lang(request: Request, form: Form | None) -> str:
    return i18n.negotiate(request.headers.get("accept-language"), form.language if form else None)


def _public_fields(form: Form, lang: str) -> dict[str, Any]:
    fields = []
    for f in form.fields:
        item = {k: f.get(k) for k in ("name", "label", "type", "required", "options", "default")}
        item["autocomplete"] = AUTOCOMPLETE.get(f.get("maps_to") or "")
        fields.append(item)
    consent = None
    if form.consent_text:
        consent = {"text": form.consent_text, "version": form.consent_version, "required": form.consent_required}
    return {"name": form.name, "fields": fields, "consent": consent, "lang": lang}


@router.get("/f/{public_key}", include_in_schema=False)
def hosted_form(public_key: str, request: Request, session: ReadSession) -> HTMLResponse:
    """The hosted form page."""
    form = capture_service.get_public_form(session, public_key)
    lang = _lang(request, form)
    if form is None:
        return _not_found_page(lang)
    return _form_page(form, request, lang, status=200, values={}, errors={}, consent_checked=False)


def _form_page(
    form: Form,
    request: Request,
    lang: str,
    *,
    status: int,
    values: dict[str, Any],
    errors: dict[str, str],
    consent_checked: bool,
) -> HTMLResponse:
    return _page(
        "form.html",
        status=status,
        form=form,
        lang=lang,
        action=f"/f/{form.public_key}",
        values=values,
        errors={name: i18n.t(lang, code) for name, code in errors.items()},
        consent_checked=consent_checked,
        honeypot=HONEYPOT_FIELD,
        page_url=request.headers.get("referer") or str(request.url),
        autocomplete=AUTOCOMPLETE,
    )


@router.get("/f/{public_key}/embed.js", include_in_schema=False)
def embed_script(public_key: str, request: Request, session: ReadSession) -> Response:
    """A script that renders the form into ``<div data-suppilo-embed="<public key>">`` on another site."""
    form = capture_service.get_public_form(session, public_key)
    headers = {"Cache-Control": "public, max-age=60", "X-Content-Type-Options": "nosniff"}
    if form is None:
        return Response(
            "/* suppilo: this form does not exist or is no longer open */\n",
            status_code=404,
            media_type="application/javascript; charset=utf-8",
            headers=headers,
        )
    headers["Vary"] = "Accept-Language"
    lang = _lang(request, form)
    workspace = workspaces_service.get_workspace(session, form.workspace_id)
    base = str(request.base_url).rstrip("/")
    config = {
        "publicKey": form.public_key,
        "action": f"{base}/f/{form.public_key}",
        "honeypot": HONEYPOT_FIELD,
        "texts": {k: i18n.t(lang, k) for k in ("submit", "choose", "failed")},
        **_public_fields(form, lang),
    }
    server = {"host": base, "requireConsent": bool(workspace.require_tracking_consent)}
    body = _snippet(server) + f'\n;(window.suppilo = window.suppilo || []).push(["form", {_js_json(config)}]);\n'
    return Response(body, media_type="application/javascript; charset=utf-8", headers=headers)


async def _submission_body(request: Request) -> tuple[dict[str, Any], bool]:
    """The submitted values and whether they came as JSON (embed) rather than a form post (hosted page)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    is_json = content_type == "application/json" or "application/json" in request.headers.get("accept", "")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_SUBMISSION_BYTES:
        raise ApiError(413, "too_large", f"a submission may be at most {MAX_SUBMISSION_BYTES} bytes", "body")
    if content_type == "application/json":
        raw = await request.body()
        if len(raw) > MAX_SUBMISSION_BYTES:
            raise ApiError(413, "too_large", f"a submission may be at most {MAX_SUBMISSION_BYTES} bytes", "body")
        try:
            data = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, "invalid_json", "the body is not valid JSON", "body") from exc
        if not isinstance(data, dict):
            raise ApiError(422, "validation_error", "the body must be a JSON object", "body")
        return data, True
    form = await request.form()
    values: dict[str, Any] = {}
    for key in form:
        items = [v for v in form.getlist(key) if isinstance(v, str)]
        values[key] = items if len(items) > 1 else (items[0] if items else "")
    return values, is_json


SubmissionBody = Depends(_submission_body)


@router.options("/f/{public_key}", include_in_schema=False)
def submission_preflight(public_key: str) -> Response:
    """CORS preflight of the embed's JSON post."""
    return Response(status_code=204, headers=CORS)


@router.post("/f/{public_key}", include_in_schema=False)
def submit_form(
    public_key: str,
    request: Request,
    session: DbSession,
    body: tuple[dict[str, Any], bool] = SubmissionBody,
) -> Response:
    """A submission from the hosted page (form-encoded) or the embed (JSON, CORS)."""
    values, is_json = body
    form = capture_service.get_public_form(session, public_key)
    lang = _lang(request, form)
    if form is None:
        if is_json:
            return JSONResponse(
                error_body("not_found", i18n.t(lang, "not_found_text"), "public_key"), status_code=404, headers=CORS
            )
        return _not_found_page(lang)
    ip = request.client.host if request.client else "unknown"
    limiter = _limiter(request)
    if not limiter.hit(ip):
        retry = {"Retry-After": str(limiter.retry_after(ip))}
        message = i18n.t(lang, "rate_limited")
        if is_json:
            return JSONResponse(error_body("rate_limited", message), status_code=429, headers={**CORS, **retry})
        response = _message_page(429, lang, form.name, message, heading=form.name)
        response.headers.update(retry)
        return response
    page_url = values.get("page_url") if is_json else (values.get("page_url") or request.headers.get("referer"))
    data = capture_service.SubmissionInput(
        values=values,
        page_url=str(page_url) if page_url else None,
        ip=ip,
        user_agent=request.headers.get("user-agent"),
    )
    try:
        capture_service.submit_form(session, form, data)
    except capture_service.SubmissionInvalid as exc:
        if is_json:
            details = [
                {"path": f"fields.{name}", "message": i18n.t(lang, code), "code": code}
                for name, code in exc.errors.items()
            ]
            return JSONResponse(
                error_body("validation_error", i18n.t(lang, "fix_errors"), details[0]["path"], details),
                status_code=422,
                headers=CORS,
            )
        kept = {k: v for k, v in exc.values.items() if k not in (HONEYPOT_FIELD, ANONYMOUS_ID_FIELD)}
        return _form_page(
            form,
            request,
            lang,
            status=422,
            values=kept,
            errors=exc.errors,
            consent_checked=capture_service.is_checked(values.get(CONSENT_FIELD)) and CONSENT_FIELD not in exc.errors,
        )
    if is_json:
        return JSONResponse(
            {"ok": True, "message": form.success_message, "redirect_url": form.redirect_url}, headers=CORS
        )
    if form.redirect_url:
        return RedirectResponse(form.redirect_url, status_code=303)
    return _message_page(200, lang, form.name, form.success_message, heading=form.name)
