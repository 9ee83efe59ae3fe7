"""HTTP routes of the consent ledger and data-subject requests (export, erasure, objection)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession, Writer
from suppilo.consent import service as consent_service
from suppilo.consent.schemas import ConsentCreate, ConsentRead, DecisionRead
from suppilo.contacts.models import Contact
from suppilo.messaging import gdpr, unsubscribe

router = APIRouter(tags=["consent"])


@router.get("/api/v1/contacts/{contact_id}/consent", response_model=list[ConsentRead])
def list_consent(contact_id: int, principal: Reader, session: ReadSession) -> list[Any]:
    """The contact's consent ledger, oldest first."""
    return consent_service.list_records(session, principal.workspace_id, contact_id)


@router.post("/api/v1/contacts/{contact_id}/consent", response_model=ConsentRead, status_code=201)
def add_consent(contact_id: int, data: ConsentCreate, principal: Writer, session: DbSession) -> Any:
    """Append a record (granted, withdrawn, objection). An unconfirmed express consent from a double-opt-in
    country queues the confirmation mail."""
    values = data.model_dump()
    confirmed = values.pop("confirmed")
    return consent_service.record_consent(
        session,
        principal.workspace_id,
        contact_id,
        **values,
        confirmed=confirmed,
    )


@router.get("/api/v1/contacts/{contact_id}/consent/decision", response_model=DecisionRead)
def consent_decision(contact_id: int, principal: Reader, session: ReadSession, topic: str = "marketing") -> Any:
    """Whether marketing mail on ``topic`` may go to the contact now, and why."""
    decision = consent_service.can_send_marketing(session, principal.workspace_id, contact_id, topic)
    contact = session.get(Contact, contact_id)
    country = contact.country if contact is not None else None
    return DecisionRead(
        contact_id=contact_id,
        topic=topic,
        allowed=decision.allowed,
        reason=decision.reason,
        regime=consent_service.regime_for(session, principal.workspace_id, country),
    )


@router.get("/api/v1/consent/topics")
def consent_topics(principal: Reader, session: ReadSession) -> list[str]:
    """The workspace's subscription topics (shown in the preference centre)."""
    return unsubscribe.topics(session, principal.workspace_id)


@router.get("/api/v1/contacts/{contact_id}/privacy/export")
def privacy_export(contact_id: int, principal: Admin, session: DbSession) -> dict[str, Any]:
    """Everything stored about the person (GDPR Art. 15/20); audited."""
    return gdpr.export_contact(session, principal.workspace_id, contact_id, actor=f"api_key:{principal.key_id}")


@router.post("/api/v1/contacts/{contact_id}/privacy/erase")
def privacy_erase(contact_id: int, principal: Admin, session: DbSession) -> dict[str, Any]:
    """Erase the person's personal data (GDPR Art. 17); hashed suppression entries stay; audited."""
    counts = gdpr.erase_contact(session, principal.workspace_id, contact_id, actor=f"api_key:{principal.key_id}")
    return {"contact_id": contact_id, "counts": counts}


@router.post("/api/v1/contacts/{contact_id}/privacy/object")
def privacy_object(contact_id: int, principal: Admin, session: DbSession) -> dict[str, Any]:
    """Record an objection to direct marketing (GDPR Art. 21); audited."""
    record_id = gdpr.object_to_marketing(
        session, principal.workspace_id, contact_id, actor=f"api_key:{principal.key_id}"
    )
    return {"contact_id": contact_id, "consent_record_id": record_id}
