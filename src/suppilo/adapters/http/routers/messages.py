"""HTTP routes of the outbox: messages (queue, list, uncertain, resend), broadcasts, suppression, webhook secret."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession, Writer
from suppilo.errors import NotFound
from suppilo.messaging import broadcasts, dsn, outbox, suppression

router = APIRouter(tags=["messages"])


class MessageRead(BaseModel):
    """An outbox row as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    dedupe_key: str
    contact_id: int | None
    broadcast_id: int | None
    kind: str
    topic: str
    template_key: str | None
    status: str
    priority: int
    attempts: int
    last_error: str | None
    to_address: str | None
    message_id: str | None
    created_at: datetime
    next_attempt_at: datetime
    sending_at: datetime | None
    sent_at: datetime | None
    delivery_status: str | None
    opened_at: datetime | None
    clicked_at: datetime | None
    human_opens: int
    machine_opens: int
    human_clicks: int
    machine_clicks: int


class MessageCreate(BaseModel):
    """A message to queue; ``dedupe_key`` names its cause (a second request with the same key queues nothing)."""

    dedupe_key: str = Field(min_length=1, max_length=200)
    contact_id: int
    template_key: str = Field(min_length=1, max_length=100)
    kind: Literal["marketing", "transactional"] = "transactional"
    topic: str = Field(default="marketing", max_length=64)
    priority: int = 0
    not_before: datetime | None = None


class BroadcastCreate(BaseModel):
    """A one-off send to ``contact_ids``, ``tag`` or ``segment_id`` (a segment or static list: its members when the
    broadcast is queued), at ``send_at`` or at ``local_time`` on ``local_date``."""

    name: str = Field(min_length=1, max_length=200)
    template_key: str = Field(min_length=1, max_length=100)
    kind: Literal["marketing", "transactional"] = "marketing"
    topic: str = Field(default="marketing", max_length=64)
    contact_ids: list[int] | None = Field(default=None, max_length=100_000)
    tag: str | None = Field(default=None, max_length=100)
    segment_id: int | None = None
    send_at: datetime | None = None
    local_date: date | None = None
    local_time: time | None = None


class BroadcastRead(BaseModel):
    """A broadcast and how far its enqueuing got."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    template_key: str
    kind: str
    topic: str
    tag: str | None
    segment_id: int | None
    send_at: datetime | None
    local_date: str | None
    local_time: str | None
    status: str
    enqueued: int
    created_at: datetime


class SuppressionCreate(BaseModel):
    """An address to suppress by hand (or after an out-of-band bounce or complaint)."""

    email: str = Field(min_length=3, max_length=320)
    reason: Literal["unsubscribe", "hard_bounce", "complaint", "manual"] = "manual"


@router.get("/api/v1/messages", response_model=list[MessageRead])
def list_messages(
    principal: Reader,
    session: ReadSession,
    status: str | None = None,
    contact_id: int | None = None,
    before_id: int | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[Any]:
    """Messages, newest first; ``status=uncertain`` lists those whose fate is unknown after a crash."""
    return outbox.list_messages(
        session, principal.workspace_id, status=status, contact_id=contact_id, before_id=before_id, limit=limit
    )


@router.get("/api/v1/messages/counts")
def message_counts(principal: Reader, session: ReadSession) -> dict[str, int]:
    """Messages per status."""
    return outbox.counts(session, principal.workspace_id)


@router.get("/api/v1/messages/uncertain", response_model=list[MessageRead])
def uncertain_messages(principal: Reader, session: ReadSession) -> list[Any]:
    """Messages the sender may or may not have handed to the server before it stopped."""
    return outbox.list_uncertain(session, principal.workspace_id)


@router.post("/api/v1/messages", response_model=MessageRead, status_code=201)
def create_message(data: MessageCreate, principal: Writer, session: DbSession, response: Response) -> Any:
    """Queue a message; an existing dedupe key answers 200 with the existing message."""
    from suppilo.contacts import service as contacts_service

    contacts_service.get_contact(session, principal.workspace_id, data.contact_id)
    row = outbox.enqueue(session, principal.workspace_id, **data.model_dump())
    if row is None:
        response.status_code = 200
        from sqlalchemy import select

        from suppilo.messaging.outbox_models import OutboxMessage

        row = session.scalar(
            select(OutboxMessage).where(
                OutboxMessage.workspace_id == principal.workspace_id, OutboxMessage.dedupe_key == data.dedupe_key
            )
        )
    return row


@router.get("/api/v1/messages/{message_id}", response_model=MessageRead)
def get_message(message_id: int, principal: Reader, session: ReadSession) -> Any:
    """One message."""
    return outbox.get_message(session, principal.workspace_id, message_id)


@router.post("/api/v1/messages/{message_id}/resend", response_model=MessageRead)
def resend_message(message_id: int, principal: Admin, session: DbSession) -> Any:
    """Queue an uncertain or failed message again (it may arrive twice: an explicit decision, audited)."""
    return outbox.resend(session, principal.workspace_id, message_id, actor=f"api_key:{principal.key_id}")


@router.post("/api/v1/broadcasts", response_model=BroadcastRead, status_code=201)
def create_broadcast(data: BroadcastCreate, principal: Writer, session: DbSession) -> Any:
    """Schedule a broadcast (the worker queues it in chunks when due)."""
    return broadcasts.create_broadcast(session, principal.workspace_id, **data.model_dump())


@router.get("/api/v1/broadcasts/{broadcast_id}", response_model=BroadcastRead)
def get_broadcast(broadcast_id: int, principal: Reader, session: ReadSession) -> Any:
    """One broadcast."""
    return broadcasts.get_broadcast(session, principal.workspace_id, broadcast_id)


@router.get("/api/v1/suppressions")
def list_suppressions(
    principal: Reader, session: ReadSession, before_id: int | None = None, limit: int = Query(100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """Suppression entries (hashes only: they outlive the contacts they came from)."""
    return [
        {"id": e.id, "address_hash": e.address_hash, "reason": e.reason, "source": e.source, "created_at": e.created_at}
        for e in suppression.list_entries(session, principal.workspace_id, limit=limit, before_id=before_id)
    ]


@router.post("/api/v1/suppressions", status_code=201)
def add_suppression(data: SuppressionCreate, principal: Writer, session: DbSession) -> dict[str, Any]:
    """Suppress an address."""
    created = suppression.suppress(session, principal.workspace_id, data.email, data.reason, source="api")
    return {"address_hash": suppression.address_hash(data.email), "reason": data.reason, "created": created}


@router.get("/api/v1/suppressions/check")
def check_suppression(
    principal: Reader, session: ReadSession, email: str, kind: Literal["marketing", "transactional"] = "marketing"
) -> dict[str, Any]:
    """Whether mail of ``kind`` to ``email`` is suppressed, and why."""
    reason = suppression.check(session, principal.workspace_id, email, kind)
    return {"suppressed": reason is not None, "reason": reason}


@router.delete("/api/v1/suppressions", status_code=204)
def remove_suppression(data: SuppressionCreate, principal: Admin, session: DbSession) -> Response:
    """Lift an entry (e.g. a mistaken bounce)."""
    from suppilo.errors import NotFound

    if not suppression.remove(session, principal.workspace_id, data.email, data.reason):
        raise NotFound("email", "no such suppression entry")
    return Response(status_code=204)


@router.get("/api/v1/mail/webhook-secret")
def get_webhook_secret(principal: Admin, session: DbSession) -> dict[str, str]:
    """The secret that signs provider webhooks to ``POST /v1/mail/events`` (created on first use)."""
    return {"secret": dsn.webhook_secret(session, principal.workspace_id)}


@router.post("/api/v1/mail/webhook-secret/rotate")
def rotate_webhook_secret(principal: Admin, session: DbSession) -> dict[str, str]:
    """Replace the webhook secret."""
    return {"secret": dsn.webhook_secret(session, principal.workspace_id, rotate=True)}


@router.get("/api/v1/mail/dkim")
def get_dkim_record(principal: Admin) -> dict[str, str]:
    """The DNS TXT record to publish for the DKIM key the sender signs with."""
    from suppilo.messaging.settings import configured_dkim_record

    record = configured_dkim_record()
    if record is None:
        raise NotFound("dkim", "DKIM signing is not configured", code="dkim_not_configured")
    return {"name": record.name, "type": record.type, "value": record.value, "zone_line": record.zone_line()}
