"""The mail catcher: messages the built-in SMTP catcher kept (``<data_dir>/mailcatcher``), each shown with its
headers, its text part and its HTML part in a sandboxed frame served under a CSP that forbids script and network.

A workspace sees the messages whose Message-ID names it (``<outbox-N.<slug>@...>``, set by the sender)."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from suppilo.adapters.web.auth import Ctx, WebError, Workspace_
from suppilo.adapters.web.security import MAIL_BODY_CSP
from suppilo.adapters.web.templating import render
from suppilo.messaging import mime
from suppilo.messaging.catcher import CaughtMessage, MailStore

router = APIRouter()
LIST_LIMIT = 200
SHOWN_HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "X-Suppilo-Kind")


def _store(request: Request) -> MailStore:
    return MailStore(request.app.state.settings.data_dir)


def belongs_to(message_id: str, slug: str) -> bool:
    parsed = mime.outbox_id_of(message_id)
    return parsed is not None and parsed[1] == slug


def _messages(request: Request, ctx: Ctx) -> list[CaughtMessage]:
    return [m for m in _store(request).list() if belongs_to(m.message_id, ctx.slug)]


def _load(request: Request, ctx: Ctx, number: int) -> tuple[CaughtMessage, EmailMessage]:
    store = _store(request)
    caught = next((m for m in store.list() if m.id == number), None)
    if caught is None or not belongs_to(caught.message_id, ctx.slug):
        raise WebError(404, "not_found")
    try:
        raw = store.read(number)
    except KeyError as exc:
        raise WebError(404, "not_found") from exc
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return caught, parsed


def _part(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    try:
        content: Any = part.get_content()
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return str(content)


@router.get("/w/{slug}/mail")
def mail_list(request: Request, ctx: Workspace_) -> Response:
    ctx.require("mail")
    messages = _messages(request, ctx)
    return render(
        request,
        "mail.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        messages=messages[:LIST_LIMIT],
        total=len(messages),
        smtp_host=request.app.state.settings.smtp_host,
    )


@router.get("/w/{slug}/mail/{number}")
def mail_message(request: Request, ctx: Workspace_, number: int) -> Response:
    ctx.require("mail")
    caught, message = _load(request, ctx, number)
    headers = [(name, str(value)) for name in SHOWN_HEADERS for value in message.get_all(name, [])]
    attachments = [(part.get_filename() or "", part.get_content_type()) for part in message.iter_attachments()]
    return render(
        request,
        "mail_message.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        caught=caught,
        headers=headers,
        text=_part(message, "plain"),
        has_html=_part(message, "html") is not None,
        attachments=attachments,
    )


@router.get("/w/{slug}/mail/{number}/body")
def mail_body(request: Request, ctx: Workspace_, number: int) -> Response:
    """The HTML part as sent, for the sandboxed frame: its own CSP forbids script, frames and any fetch."""
    ctx.require("mail")
    _, message = _load(request, ctx, number)
    html = _part(message, "html")
    if html is None:
        raise WebError(404, "not_found")
    return HTMLResponse(
        html,
        headers={
            "content-security-policy": MAIL_BODY_CSP,
            "x-frame-options": "SAMEORIGIN",
            "cache-control": "no-store",
        },
    )


@router.get("/w/{slug}/mail/{number}/raw")
def mail_raw(request: Request, ctx: Workspace_, number: int) -> Response:
    """The message source as plain text (downloaded, never rendered)."""
    ctx.require("mail")
    _load(request, ctx, number)
    data = _store(request).read(number)
    return Response(
        data,
        media_type="text/plain; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="message-{number}.eml"',
            "content-security-policy": "default-src 'none'; sandbox",
            "cache-control": "no-store",
        },
    )
