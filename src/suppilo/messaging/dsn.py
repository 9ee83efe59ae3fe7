"""Delivery reports: RFC 3464 DSNs and ARF complaints over an inbound SMTP endpoint, and signed provider webhooks.

Every event is applied once (``mail_events`` is unique per workspace and event key) and in any order: a
``delivered`` arriving after a ``bounce`` changes nothing (bounced and complained outrank delivered).
A permanent failure (status 5.x.x) is a hard bounce and suppresses the address for all mail.
"""

from __future__ import annotations

import asyncio
import email
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from suppilo.db.base import utcnow
from suppilo.db.session import unit_of_work
from suppilo.events import service as events_service
from suppilo.messaging import suppression
from suppilo.messaging.outbox_models import MailEvent, OutboxMessage
from suppilo.workspaces.models import Workspace

log = logging.getLogger("suppilo.messaging.dsn")

EVENT_KINDS = ("delivered", "bounce", "soft_bounce", "complaint", "open", "click")
# delivery_status precedence: a lower rank never overwrites a higher one.
RANK = {None: 0, "soft_bounced": 1, "delivered": 2, "bounced": 3, "complained": 3}
WEBHOOK_TOLERANCE_SECONDS = 300


@dataclass(slots=True)
class DeliveryReport:
    """One recipient's outcome read from a DSN or complaint report."""

    kind: str
    recipient: str | None
    status: str | None
    original_message_id: str | None
    event_key: str
    detail: dict[str, Any] = field(default_factory=dict)


def _header_block(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        first = payload[0]
        return first if isinstance(first, Message) else None
    text = part.get_payload(decode=True)
    if isinstance(text, bytes):
        return HeaderParser().parsestr(text.decode("utf-8", "replace"))
    if isinstance(payload, str):
        return HeaderParser().parsestr(payload)
    return None


def _original_message_id(report: Message) -> str | None:
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype in ("text/rfc822-headers", "message/rfc822", "text/rfc822"):
            headers = _header_block(part)
            if headers is not None and headers.get("Message-ID"):
                return str(headers.get("Message-ID")).strip()
    return None


def _address(value: str | None) -> str | None:
    if not value:
        return None
    text = str(value)
    if ";" in text:
        text = text.split(";", 1)[1]
    addr = parseaddr(text.strip())[1] or text.strip()
    return addr or None


def parse_report(data: bytes) -> list[DeliveryReport]:
    """The per-recipient outcomes of a DSN (multipart/report; report-type=delivery-status) or an ARF complaint
    (report-type=feedback-report); an empty list for any other message."""
    msg = email.message_from_bytes(data)
    if msg.get_content_type() != "multipart/report":
        return []
    param = msg.get_param("report-type")
    report_type = param.lower() if isinstance(param, str) else ""
    own_id = str(msg.get("Message-ID") or "").strip() or hashlib.sha256(data).hexdigest()
    original = _original_message_id(msg)
    out: list[DeliveryReport] = []
    if report_type == "delivery-status":
        for part in msg.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            blocks = part.get_payload()
            if not isinstance(blocks, list):
                continue
            for block in blocks[1:]:  # the first block is per-message, the others per-recipient
                if not isinstance(block, Message):
                    continue
                action = str(block.get("Action", "")).strip().lower()
                status = str(block.get("Status", "")).strip() or None
                recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
                if action == "failed" or (status or "").startswith("5"):
                    kind = "bounce" if (status or "5").startswith("5") else "soft_bounce"
                elif action == "delayed" or (status or "").startswith("4"):
                    kind = "soft_bounce"
                elif action in ("delivered", "relayed", "expanded"):
                    kind = "delivered"
                else:
                    continue
                out.append(
                    DeliveryReport(
                        kind=kind,
                        recipient=recipient,
                        status=status,
                        original_message_id=original,
                        event_key=f"dsn:{own_id}:{recipient or ''}"[:200],
                        detail={
                            "action": action,
                            "status": status,
                            "diagnostic": str(block.get("Diagnostic-Code", ""))[:500] or None,
                        },
                    )
                )
    elif report_type == "feedback-report":
        feedback_type = None
        recipient = None
        for part in msg.walk():
            if part.get_content_type() == "message/feedback-report":
                block = _header_block(part)
                if block is not None:
                    feedback_type = str(block.get("Feedback-Type", "")).strip().lower()
                    recipient = _address(block.get("Original-Rcpt-To"))
        if feedback_type:
            out.append(
                DeliveryReport(
                    kind="complaint",
                    recipient=recipient,
                    status=None,
                    original_message_id=original,
                    event_key=f"arf:{own_id}"[:200],
                    detail={"feedback_type": feedback_type},
                )
            )
    return out


def _insert(session: Session):  # type: ignore[no-untyped-def]
    name = session.get_bind().dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(MailEvent)


def find_message(
    session: Session, *, workspace_id: int | None, outbox_id: int | None = None, message_id: str | None = None
) -> OutboxMessage | None:
    """The outbox row of an event, by outbox id (within the workspace) or by Message-ID header."""
    if outbox_id is not None and workspace_id is not None:
        return session.scalar(
            select(OutboxMessage).where(OutboxMessage.workspace_id == workspace_id, OutboxMessage.id == outbox_id)
        )
    if message_id:
        wanted = message_id.strip()
        if not wanted.startswith("<"):
            wanted = f"<{wanted}>"
        query = select(OutboxMessage).where(OutboxMessage.message_id == wanted)
        if workspace_id is not None:
            query = query.where(OutboxMessage.workspace_id == workspace_id)
        return session.scalar(query)
    return None


def apply_mail_event(
    session: Session,
    workspace_id: int,
    *,
    event_key: str,
    kind: str,
    row: OutboxMessage | None,
    recipient: str | None = None,
    occurred_at: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Apply one delivery event once; False when its key was seen before (nothing changes)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown mail event kind {kind!r}")
    now = utcnow()
    at = occurred_at or now
    session.flush()
    inserted = session.execute(
        _insert(session)
        .values(
            workspace_id=workspace_id,
            event_key=event_key[:200],
            outbox_id=row.id if row is not None else None,
            kind=kind,
            occurred_at=at,
            received_at=now,
            detail=detail or {},
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "event_key"])
        .returning(MailEvent.id)
    ).scalar()
    if inserted is None:
        return False
    address = recipient or (row.to_address if row is not None else None)
    if kind == "bounce" and address:
        suppression.suppress(session, workspace_id, address, "hard_bounce", source=f"event:{event_key}"[:200], at=at)
    if kind == "complaint" and address:
        suppression.suppress(session, workspace_id, address, "complaint", source=f"event:{event_key}"[:200], at=at)
    if row is None:
        return True
    new_status = {
        "delivered": "delivered",
        "bounce": "bounced",
        "soft_bounce": "soft_bounced",
        "complaint": "complained",
    }.get(kind)
    if new_status is not None:
        if RANK[new_status] <= RANK.get(row.delivery_status, 0) and not (
            new_status == "complained" and row.delivery_status == "bounced"
        ):
            return True  # superseded (e.g. delivered after bounce): stored, but no state change
        row.delivery_status = new_status
        row.delivery_at = at
    if row.contact_id is not None:
        name = {
            "delivered": "email_delivered",
            "bounce": "email_bounced",
            "soft_bounce": "email_bounced",
            "complaint": "email_complained",
            "open": "email_opened",
            "click": "email_clicked",
        }[kind]
        props: dict[str, Any] = {"outbox_id": row.id, "source": "provider", **(detail or {})}
        if kind in ("bounce", "soft_bounce"):
            props["permanent"] = kind == "bounce"
        events_service.record_event(
            session, workspace_id, row.contact_id, name, props, at, message_id=f"mail-event-{event_key}"[:200]
        )
    session.flush()
    return True


def apply_report(session: Session, report: DeliveryReport) -> bool:
    """Apply a parsed DSN/ARF report to the message it names (by Message-ID); False when unknown or repeated."""
    row = find_message(session, workspace_id=None, message_id=report.original_message_id)
    if row is None:
        log.info("report for an unknown message %s ignored", report.original_message_id)
        return False
    return apply_mail_event(
        session,
        row.workspace_id,
        event_key=report.event_key,
        kind=report.kind,
        row=row,
        recipient=report.recipient or row.to_address,
        detail=report.detail,
    )


class DsnHandler:
    """An aiosmtpd handler that reads bounces and complaints sent to the bounce address and applies them.

    Run it on its own port (``aiosmtpd.controller.Controller(DsnHandler(factory), port=...)``) beside the catcher.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory
        self.applied = 0

    def _apply(self, data: bytes) -> int:
        reports = parse_report(data)
        applied = 0
        with unit_of_work(self.session_factory) as session:
            for report in reports:
                applied += apply_report(session, report)
        return applied

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        try:
            self.applied += await asyncio.to_thread(self._apply, data)
        except Exception:
            log.exception("could not apply a delivery report")
            return "451 4.3.0 could not process the report, try again later"
        return "250 OK"


# --- provider webhooks -----------------------------------------------------------------------------------------


def webhook_secret(session: Session, workspace_id: int, *, rotate: bool = False) -> str:
    """The workspace's webhook signing secret (created on first use, replaced when ``rotate``)."""
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise LookupError(f"workspace {workspace_id} does not exist")
    settings = dict(workspace.settings or {})
    if rotate or not settings.get("mail_webhook_secret"):
        settings["mail_webhook_secret"] = secrets.token_urlsafe(32)
        workspace.settings = settings
        session.flush()
    return str(settings["mail_webhook_secret"])


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``timestamp + "." + body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def verify_webhook(
    secret: str, timestamp: str | None, body: bytes, signature: str | None, *, now: datetime | None = None
) -> str | None:
    """None when the request is authentic and fresh, else why not (``missing``, ``stale``, ``bad_signature``)."""
    if not timestamp or not signature:
        return "missing"
    try:
        ts = int(timestamp)
    except ValueError:
        return "missing"
    current = (now or utcnow()).timestamp()
    if abs(current - ts) > WEBHOOK_TOLERANCE_SECONDS:
        return "stale"
    if not hmac.compare_digest(webhook_signature(secret, timestamp, body), signature.strip()):
        return "bad_signature"
    return None
