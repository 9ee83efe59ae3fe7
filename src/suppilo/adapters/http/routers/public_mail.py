"""Public mail endpoints (no API key, no cookies): one-click unsubscribe and the preference centre (``/u``),
the open pixel (``/o``), click redirects (``/c``), double-opt-in confirmation (``/consent/confirm``) and the
signed provider webhook (``POST /v1/mail/events``).

A forged or altered token writes nothing. A GET never unsubscribes or confirms (link scanners fetch links).
"""

from __future__ import annotations

import html
import json
import logging
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from suppilo.adapters.http.deps import DbSession
from suppilo.adapters.http.errors import ApiError
from suppilo.consent import service as consent_service
from suppilo.errors import NotFound
from suppilo.messaging import dsn, tracking, unsubscribe
from suppilo.workspaces import service as workspaces_service

router = APIRouter(tags=["public mail"])
log = logging.getLogger(__name__)

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


def _secret(request: Request) -> str:
    return str(request.app.state.settings.resolved_secret_key())


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;"
        "margin:3rem auto;padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.5rem 1rem}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers=PAGE_HEADERS)


def _invalid() -> HTMLResponse:
    return _page(
        "This link is not valid", "<p>The link is incomplete, altered or expired. Nothing was changed.</p>", 404
    )


def _claim(request: Request, token: str) -> unsubscribe.UnsubscribeClaim | None:
    return unsubscribe.parse_unsubscribe_token(_secret(request), token)


def _preference_form(token: str, prefs: dict[str, Any]) -> str:
    boxes = "".join(
        f"<p><label><input type='checkbox' name='{html.escape(t)}' value='on'{' checked' if on else ''}> "
        f"{html.escape(t.replace('_', ' ').capitalize())}</label></p>"
        for t, on in prefs["topics"].items()
    )
    return (
        f"<h2>Preferences</h2><form method='post' action='/u/{html.escape(token)}/preferences'>{boxes}"
        "<input type='hidden' name='_submitted' value='1'><button type='submit'>Save preferences</button></form>"
    )


@router.get("/u/{token}", include_in_schema=False)
def unsubscribe_page(token: str, request: Request, session: DbSession) -> HTMLResponse:
    """A confirmation page with the preference centre; it changes nothing by itself."""
    claim = _claim(request, token)
    if claim is None:
        return _invalid()
    prefs = unsubscribe.preferences(session, claim)
    if prefs["email"] is None:
        return _page("Unsubscribed", "<p>This address receives no more marketing mail.</p>")
    state = "<p>You are unsubscribed from marketing mail.</p>" if prefs["unsubscribed"] else ""
    body = (
        f"<p>Mail to <strong>{html.escape(prefs['email'])}</strong>.</p>{state}"
        f"<form method='post' action='/u/{html.escape(token)}'>"
        "<input type='hidden' name='List-Unsubscribe' value='One-Click'>"
        "<button type='submit'>Unsubscribe from all marketing mail</button></form>" + _preference_form(token, prefs)
    )
    return _page("Email preferences", body)


@router.post("/u/{token}", include_in_schema=False)
def one_click_unsubscribe(token: str, request: Request, session: DbSession) -> HTMLResponse:
    """RFC 8058 one-click unsubscribe (``List-Unsubscribe=One-Click``) and the page's button: suppresses at once."""
    claim = _claim(request, token)
    if claim is None:
        return _invalid()
    unsubscribe.unsubscribe(
        session, claim, source="one_click", ip=_ip(request), user_agent=request.headers.get("user-agent")
    )
    return _page("Unsubscribed", "<p>You will receive no more marketing mail from us.</p>")


@router.post("/u/{token}/preferences", include_in_schema=False)
async def save_preferences(token: str, request: Request) -> HTMLResponse:
    """Save the preference centre (a checkbox per topic)."""
    claim = _claim(request, token)
    if claim is None:
        return _invalid()
    form = await request.form()
    factory = request.app.state.session_factory

    def apply() -> dict[str, Any]:
        with factory() as session:
            topics = unsubscribe.topics(session, claim.workspace_id)
            wanted = {t: form.get(t) == "on" for t in topics}
            prefs = unsubscribe.update_preferences(
                session, claim, wanted, ip=_ip(request), user_agent=request.headers.get("user-agent")
            )
            session.commit()
            return prefs

    from starlette.concurrency import run_in_threadpool

    prefs = await run_in_threadpool(apply)
    return _page("Preferences saved", "<p>Your choices are saved.</p>" + _preference_form(token, prefs))


@router.get("/o/{token}.gif", include_in_schema=False)
def open_pixel(token: str, request: Request, session: DbSession) -> Response:
    """The open pixel: always a GIF; a valid token counts an open (machines flagged)."""
    tracking.record_open(
        session, _secret(request), token, user_agent=request.headers.get("user-agent"), ip=_ip(request)
    )
    return Response(
        tracking.PIXEL_GIF, media_type="image/gif", headers={"Cache-Control": "no-store, max-age=0", **PAGE_HEADERS}
    )


@router.api_route("/c/{token}", methods=["GET", "HEAD"], include_in_schema=False)
def click(token: str, request: Request, session: DbSession) -> Response:
    """Redirect to the URL stored when the message was sent; an unknown or forged token is a 404."""
    result = tracking.record_click(
        session,
        _secret(request),
        token,
        user_agent=request.headers.get("user-agent"),
        ip=_ip(request),
        method=request.method,
    )
    if result is None or not result.url:
        return _invalid()
    return RedirectResponse(
        result.url, status_code=302, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


@router.get("/consent/confirm/{token}", include_in_schema=False)
def confirm_page(token: str, request: Request) -> HTMLResponse:
    """Double opt-in: a page with a confirm button (a GET confirms nothing)."""
    if unsubscribe.parse_confirm_token(_secret(request), token) is None:
        return _invalid()
    return _page(
        "Confirm your subscription",
        f"<form method='post' action='/consent/confirm/{html.escape(token)}'>"
        "<button type='submit'>Yes, subscribe me</button></form>",
    )


@router.post("/consent/confirm/{token}", include_in_schema=False)
def confirm(token: str, request: Request, session: DbSession) -> HTMLResponse:
    """Record the double-opt-in confirmation."""
    parsed = unsubscribe.parse_confirm_token(_secret(request), token)
    if parsed is None:
        return _invalid()
    try:
        consent_service.confirm_double_opt_in(
            session, parsed[0], parsed[1], ip=_ip(request), user_agent=request.headers.get("user-agent")
        )
    except NotFound:
        return _invalid()
    return _page("Subscription confirmed", "<p>Thank you, your subscription is confirmed.</p>")


# --- provider webhook ----------------------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _apply_events(session: Session, workspace_id: int, events: list[Any]) -> dict[str, int]:
    applied = duplicates = unknown = 0
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
            raise ApiError(422, "invalid", "each event needs an id and a type", f"body.events[{index}]")
        kind = str(event["type"]).lower()
        if kind == "bounce" and str(event.get("bounce_type", "hard")).lower() == "soft":
            kind = "soft_bounce"
        if kind not in dsn.EVENT_KINDS:
            raise ApiError(422, "invalid", f"unknown event type {event['type']!r}", f"body.events[{index}].type")
        outbox_id = event.get("outbox_id")
        row = dsn.find_message(
            session,
            workspace_id=workspace_id,
            outbox_id=int(outbox_id) if isinstance(outbox_id, int) else None,
            message_id=event.get("message_id"),
        )
        if row is None and not event.get("recipient"):
            unknown += 1
            continue
        detail = {k: event[k] for k in ("status", "diagnostic", "bounce_type", "url") if event.get(k) is not None}
        if dsn.apply_mail_event(
            session,
            workspace_id,
            event_key=f"provider:{event['id']}",
            kind=kind,
            row=row,
            recipient=event.get("recipient"),
            occurred_at=_parse_time(event.get("timestamp")),
            detail=detail,
        ):
            applied += 1
        else:
            duplicates += 1
    return {"applied": applied, "duplicates": duplicates, "unknown": unknown}


@router.post("/v1/mail/events", tags=["messages"])
async def provider_events(request: Request) -> dict[str, int]:
    """Delivery events from a mail provider, signed: ``X-Suppilo-Workspace`` (slug), ``X-Suppilo-Timestamp``
    (Unix seconds, within 5 minutes) and ``X-Suppilo-Signature: sha256=HMAC(secret, timestamp + "." + body)``.
    Each event (``{"id", "type": delivered|bounce|soft_bounce|complaint|open|click, "message_id" | "outbox_id",
    "recipient", "timestamp"}``) is applied once however often it arrives."""
    body = await request.body()
    slug = request.headers.get("x-suppilo-workspace", "")
    factory = request.app.state.session_factory

    def handle() -> dict[str, int]:
        with factory() as session:
            workspace = workspaces_service.get_workspace_by_slug(session, slug) if slug else None
            secret = (workspace.settings or {}).get("mail_webhook_secret") if workspace is not None else None
            problem = (
                dsn.verify_webhook(
                    str(secret),
                    request.headers.get("x-suppilo-timestamp"),
                    body,
                    request.headers.get("x-suppilo-signature"),
                )
                if secret
                else "bad_signature"
            )
            if problem is not None:
                raise ApiError(401, "unauthorized", f"webhook rejected: {problem}", "headers.x-suppilo-signature")
            assert workspace is not None
            try:
                payload = json.loads(body)
            except ValueError as exc:
                raise ApiError(400, "invalid_json", "the body is not JSON", "body") from exc
            events = payload.get("events") if isinstance(payload, dict) and "events" in payload else [payload]
            if not isinstance(events, list) or len(events) > 1000:
                raise ApiError(422, "invalid", "events must be a list of at most 1000", "body.events")
            result = _apply_events(session, workspace.id, events)
            session.commit()
            return result

    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(handle)
