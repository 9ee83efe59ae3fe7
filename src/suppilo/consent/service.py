"""Consent use cases: append records, confirm double opt-in, derive the current state, decide on marketing mail.

Services flush, never commit. The ledger is append-only: nothing here updates or deletes a record
(erasure, in ``suppilo.messaging.gdpr``, is the only exception).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.consent.models import ConsentRecord
from suppilo.consent.policies import ACTIONS, LEGAL_BASES, Decision, Grant, decide, needs_double_opt_in, regime
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.errors import DomainError, NotFound
from suppilo.workspaces.models import Workspace

GENERAL_TOPIC = "marketing"
OBJECTION_TOPIC = "*"
DOUBLE_OPT_IN_TEMPLATE = "double_opt_in"


class ConsentError(DomainError):
    """A refused consent operation."""


def _contact(session: Session, workspace_id: int, contact_id: int) -> Contact:
    contact = session.scalar(select(Contact).where(Contact.workspace_id == workspace_id, Contact.id == contact_id))
    if contact is None:
        raise NotFound("contact_id", f"contact {contact_id} not found")
    return contact


def workspace_rules(session: Session, workspace_id: int) -> tuple[str, bool]:
    """(home country, whether EU sign-ups need double opt-in) of a workspace."""
    row = session.execute(select(Workspace.country, Workspace.settings).where(Workspace.id == workspace_id)).one()
    return row.country, bool((row.settings or {}).get("eu_double_opt_in", True))


def regime_for(session: Session, workspace_id: int, country: str | None) -> str:
    """The regime for a contact in ``country`` (the workspace's country when unknown)."""
    home, eu_doi = workspace_rules(session, workspace_id)
    return regime(country or home, eu_double_opt_in=eu_doi)


def record_consent(
    session: Session,
    workspace_id: int,
    contact_id: int,
    *,
    action: str = "granted",
    topic: str = GENERAL_TOPIC,
    legal_basis: str = "consent",
    channel: str = "email",
    source: str = "",
    source_url: str | None = None,
    consent_text: str | None = None,
    consent_version: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    at: datetime | None = None,
    evidence_at: datetime | None = None,
    confirmed: bool = False,
    request_double_opt_in: bool = True,
) -> ConsentRecord:
    """Append a record. A granted express consent from a double-opt-in country is stored unconfirmed and,
    when ``request_double_opt_in``, a transactional confirmation mail (template ``double_opt_in``) is queued."""
    if action not in ACTIONS:
        raise ConsentError("action", f"action must be one of {', '.join(ACTIONS)}", code="invalid_action")
    if legal_basis not in LEGAL_BASES:
        raise ConsentError("legal_basis", f"legal basis must be one of {', '.join(LEGAL_BASES)}", code="invalid_basis")
    if channel != "email":
        raise ConsentError("channel", "only the email channel is supported", code="invalid_channel")
    contact = _contact(session, workspace_id, contact_id)
    now = at or utcnow()
    home, eu_doi = workspace_rules(session, workspace_id)
    doi = (
        action == "granted"
        and legal_basis == "consent"
        and needs_double_opt_in(contact.country or home, eu_double_opt_in=eu_doi)
    )
    record = ConsentRecord(
        workspace_id=workspace_id,
        contact_id=contact_id,
        channel=channel,
        topic=OBJECTION_TOPIC if action == "objection" else topic,
        action=action,
        legal_basis=legal_basis,
        source=source[:200],
        source_url=(source_url or None) and source_url[:2000],
        consent_text=consent_text,
        consent_version=consent_version,
        ip=(ip or None) and str(ip)[:64],
        user_agent=(user_agent or None) and user_agent[:500],
        recorded_at=now,
        evidence_at=evidence_at,
        confirmed_at=now if (confirmed and action == "granted") else None,
    )
    session.add(record)
    session.flush()
    if doi and record.confirmed_at is None and request_double_opt_in and contact.email:
        from suppilo.messaging import outbox

        outbox.enqueue(
            session,
            workspace_id,
            dedupe_key=f"consent:{record.id}:double_opt_in",
            contact_id=contact_id,
            template_key=DOUBLE_OPT_IN_TEMPLATE,
            kind="transactional",
            priority=10,
            extra={"confirm_consent_id": record.id},
        )
    _segments_follow(session, workspace_id, contact_id, now)
    return record


def _segments_follow(session: Session, workspace_id: int, contact_id: int, now: datetime) -> None:
    """Segments with consent conditions move with the ledger, in the same transaction."""
    from suppilo.segments import service as segments_service

    segments_service.update_for_contacts(session, workspace_id, [contact_id], {"consent"}, now, reason="consent")


def confirm_double_opt_in(
    session: Session,
    workspace_id: int,
    record_id: int,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    at: datetime | None = None,
) -> ConsentRecord:
    """Append the confirmation of sign-up ``record_id`` (idempotent: a second click returns the first confirmation)."""
    signup = session.scalar(
        select(ConsentRecord).where(ConsentRecord.workspace_id == workspace_id, ConsentRecord.id == record_id)
    )
    if signup is None or signup.action != "granted":
        raise NotFound("record_id", f"consent record {record_id} not found")
    existing = session.scalar(
        select(ConsentRecord).where(ConsentRecord.workspace_id == workspace_id, ConsentRecord.confirms_id == record_id)
    )
    if existing is not None:
        return existing
    now = at or utcnow()
    record = ConsentRecord(
        workspace_id=workspace_id,
        contact_id=signup.contact_id,
        channel=signup.channel,
        topic=signup.topic,
        action="granted",
        legal_basis=signup.legal_basis,
        source="double_opt_in",
        source_url=signup.source_url,
        consent_text=signup.consent_text,
        consent_version=signup.consent_version,
        ip=(ip or None) and str(ip)[:64],
        user_agent=(user_agent or None) and user_agent[:500],
        recorded_at=now,
        confirms_id=signup.id,
        confirmed_at=now,
    )
    session.add(record)
    session.flush()
    _segments_follow(session, workspace_id, signup.contact_id, now)
    return record


def list_records(session: Session, workspace_id: int, contact_id: int) -> list[ConsentRecord]:
    """A contact's ledger, oldest first."""
    _contact(session, workspace_id, contact_id)
    return list(
        session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.workspace_id == workspace_id, ConsentRecord.contact_id == contact_id)
            .order_by(ConsentRecord.recorded_at, ConsentRecord.id)
        )
    )


def derive_state(records: Iterable[Any]) -> tuple[dict[str, Grant], bool]:
    """(topic -> latest Grant, objection) from records in time order. A repeated unconfirmed sign-up keeps an
    earlier confirmation that was not withdrawn in between."""
    state: dict[str, Grant] = {}
    objection = False
    for r in sorted(records, key=lambda r: (r.recorded_at, r.id)):
        if r.action == "objection":
            objection = True
            continue
        confirmed = r.confirmed_at
        previous = state.get(r.topic)
        if (
            r.action == "granted"
            and confirmed is None
            and previous is not None
            and previous.action == "granted"
            and previous.confirmed_at is not None
            and previous.legal_basis == r.legal_basis
        ):
            confirmed = previous.confirmed_at
        if (
            r.action == "granted"
            and previous is not None
            and previous.action == "granted"
            and previous.legal_basis == "consent"
            and r.legal_basis != "consent"
        ):
            # Implied consent (a later purchase) never downgrades express consent.
            continue
        state[r.topic] = Grant(r.action, r.legal_basis, r.recorded_at, r.evidence_at, confirmed)
    return state, objection


def decide_from_records(records: Iterable[Any], topic: str, rule: str, now: datetime) -> Decision:
    """The marketing decision for one topic from a contact's records."""
    state, objection = derive_state(records)
    specific = state.get(topic) if topic != GENERAL_TOPIC else None
    return decide(rule, objection=objection, general=state.get(GENERAL_TOPIC), specific=specific, now=now)


def can_send_marketing(
    session: Session, workspace_id: int, contact_id: int, topic: str = GENERAL_TOPIC, now: datetime | None = None
) -> Decision:
    """Whether a marketing mail on ``topic`` may go to the contact at ``now`` under its country's policy."""
    contact = _contact(session, workspace_id, contact_id)
    rule = regime_for(session, workspace_id, contact.country)
    records = session.scalars(
        select(ConsentRecord).where(ConsentRecord.workspace_id == workspace_id, ConsentRecord.contact_id == contact_id)
    )
    return decide_from_records(list(records), topic, rule, now or utcnow())


def marketing_decisions(
    session: Session,
    workspace_id: int,
    wanted: Iterable[tuple[int, str]],
    countries: dict[int, str | None],
    now: datetime,
) -> dict[tuple[int, str], Decision]:
    """Decisions for many (contact id, topic) pairs with one query (the sender's claiming transaction)."""
    pairs = list(wanted)
    if not pairs:
        return {}
    home, eu_doi = workspace_rules(session, workspace_id)
    ids = sorted({cid for cid, _ in pairs})
    by_contact: dict[int, list[Any]] = defaultdict(list)
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        for r in session.execute(
            select(
                ConsentRecord.id,
                ConsentRecord.contact_id,
                ConsentRecord.topic,
                ConsentRecord.action,
                ConsentRecord.legal_basis,
                ConsentRecord.recorded_at,
                ConsentRecord.evidence_at,
                ConsentRecord.confirmed_at,
            ).where(ConsentRecord.workspace_id == workspace_id, ConsentRecord.contact_id.in_(chunk))
        ):
            by_contact[r.contact_id].append(r)
    out: dict[tuple[int, str], Decision] = {}
    for cid, topic in pairs:
        rule = regime(countries.get(cid) or home, eu_double_opt_in=eu_doi)
        out[(cid, topic)] = decide_from_records(by_contact.get(cid, []), topic, rule, now)
    return out


def has_objection(session: Session, workspace_id: int, contact_id: int) -> bool:
    """Whether the contact objected to direct marketing (GDPR Art. 21): no marketing mail, no marketing scoring."""
    return (
        session.scalar(
            select(ConsentRecord.id)
            .where(
                ConsentRecord.workspace_id == workspace_id,
                ConsentRecord.contact_id == contact_id,
                ConsentRecord.action == "objection",
            )
            .limit(1)
        )
        is not None
    )


def objecting_contacts(session: Session, workspace_id: int, contact_ids: Iterable[int]) -> set[int]:
    """Which of ``contact_ids`` objected to direct marketing (for scoring and segment jobs)."""
    ids = list(contact_ids)
    if not ids:
        return set()
    return set(
        session.scalars(
            select(ConsentRecord.contact_id).where(
                ConsentRecord.workspace_id == workspace_id,
                ConsentRecord.contact_id.in_(ids),
                ConsentRecord.action == "objection",
            )
        )
    )
