"""Data-subject rights: export (GDPR Art. 15/20), erasure (Art. 17) and objection to direct marketing (Art. 21).

Each writes an audit-log entry. Erasure removes personal data from the contact, its events, touches, form
submissions, consent records, messages and audit details, keeps rows that aggregate counts rely on (events by
name and time, orders' amounts, message statuses) and keeps the hashed suppression entries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Table, delete, inspect, select, update
from sqlalchemy.orm import Session

from suppilo.capture.models import FormSubmission
from suppilo.commerce.models import Cart, Order, OrderLine
from suppilo.consent import service as consent_service
from suppilo.consent.models import ConsentRecord
from suppilo.contacts.models import Contact, ContactIdentity, ContactMerge, ContactTag, StageChange
from suppilo.contacts.normalize import normalize_email
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.errors import NotFound
from suppilo.events.models import Event, Touch
from suppilo.messaging import outbox, suppression
from suppilo.messaging.outbox_models import OutboxBody, OutboxMessage
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.models import AuditLog

# Contact columns that identify a person; erasure clears them.
PERSONAL_CONTACT_COLUMNS = (
    "email",
    "external_id",
    "first_name",
    "last_name",
    "first_name_lower",
    "last_name_lower",
    "phone",
    "region",
    "city",
    "job_title",
)


def find_contact(
    session: Session, workspace_id: int, *, contact_id: int | None = None, email: str | None = None
) -> Contact:
    """The contact by id or by (normalised) email; NotFound otherwise."""
    query = select(Contact).where(Contact.workspace_id == workspace_id)
    if contact_id is not None:
        query = query.where(Contact.id == contact_id)
    elif email:
        query = query.where(Contact.email == normalize_email(email))
    else:
        raise NotFound("contact_id", "give a contact id or an email address")
    contact = session.scalar(query)
    if contact is None:
        raise NotFound("contact_id" if contact_id is not None else "email", "contact not found")
    return contact


def _plain(obj: Any) -> dict[str, Any]:
    table: Table = inspect(obj).mapper.local_table
    out: dict[str, Any] = {}
    for col in table.columns:
        assert isinstance(col, Column)
        value = getattr(obj, col.key)
        out[col.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _rows(session: Session, model: Any, *conditions: Any, order: Any = None) -> list[dict[str, Any]]:
    query = select(model).where(*conditions)
    if order is not None:
        query = query.order_by(order)
    return [_plain(o) for o in session.scalars(query)]


def export_contact(session: Session, workspace_id: int, contact_id: int, *, actor: str = "system") -> dict[str, Any]:
    """Everything stored about a person, as JSON-ready data."""
    contact = find_contact(session, workspace_id, contact_id=contact_id)
    cid = contact.id
    orders = _rows(session, Order, Order.workspace_id == workspace_id, Order.contact_id == cid, order=Order.id)
    order_ids = [o["id"] for o in orders]
    lines = _rows(session, OrderLine, OrderLine.order_id.in_(order_ids), order=OrderLine.id) if order_ids else []
    for o in orders:
        o["lines"] = [line for line in lines if line["order_id"] == o["id"]]
    suppressed = (
        sorted(
            suppression.reasons_for_hashes(session, workspace_id, [suppression.address_hash(contact.email)]).get(
                suppression.address_hash(contact.email), set()
            )
        )
        if contact.email
        else []
    )
    data = {
        "format": "suppilo.contact_export.v1",
        "exported_at": utcnow().isoformat(),
        "contact": _plain(contact),
        "identities": _rows(
            session, ContactIdentity, ContactIdentity.workspace_id == workspace_id, ContactIdentity.contact_id == cid
        ),
        "tags": sorted(
            session.scalars(
                select(ContactTag.tag).where(ContactTag.workspace_id == workspace_id, ContactTag.contact_id == cid)
            )
        ),
        "events": _rows(
            session, Event, Event.workspace_id == workspace_id, Event.contact_id == cid, order=Event.occurred_at
        ),
        "touches": _rows(
            session, Touch, Touch.workspace_id == workspace_id, Touch.contact_id == cid, order=Touch.occurred_at
        ),
        "stage_changes": _rows(
            session,
            StageChange,
            StageChange.workspace_id == workspace_id,
            StageChange.contact_id == cid,
            order=StageChange.changed_at,
        ),
        "orders": orders,
        "carts": _rows(session, Cart, Cart.workspace_id == workspace_id, Cart.contact_id == cid, order=Cart.id),
        "form_submissions": _rows(
            session,
            FormSubmission,
            FormSubmission.workspace_id == workspace_id,
            FormSubmission.contact_id == cid,
            order=FormSubmission.id,
        ),
        "consent_records": _rows(
            session,
            ConsentRecord,
            ConsentRecord.workspace_id == workspace_id,
            ConsentRecord.contact_id == cid,
            order=ConsentRecord.id,
        ),
        "messages": _rows(
            session,
            OutboxMessage,
            OutboxMessage.workspace_id == workspace_id,
            OutboxMessage.contact_id == cid,
            order=OutboxMessage.id,
        ),
        # The content of messages queued pre-rendered (templates are rendered at send time and not stored).
        "message_bodies": _rows(
            session,
            OutboxBody,
            OutboxBody.workspace_id == workspace_id,
            OutboxBody.outbox_id.in_(
                select(OutboxMessage.id).where(
                    OutboxMessage.workspace_id == workspace_id, OutboxMessage.contact_id == cid
                )
            ),
            order=OutboxBody.outbox_id,
        ),
        "suppression": suppressed,
        "merged_contacts": _rows(
            session, ContactMerge, ContactMerge.workspace_id == workspace_id, ContactMerge.contact_id == cid
        ),
    }
    data.update(_retention_rows(session, workspace_id, cid))
    data.update(_sales_rows(session, workspace_id, cid))
    workspaces_service.record_audit(
        session, workspace_id, actor=actor, action="privacy.export", subject_type="contact", subject_id=cid
    )
    session.flush()
    return data


def _retention_rows(session: Session, workspace_id: int, cid: int) -> dict[str, Any]:
    """Journeys, coupons, loyalty points, referrals, survey answers and reviews of the person."""
    from suppilo.advocacy.models import Referral, ReferralCode, Review, SurveyResponse
    from suppilo.journeys.models import Enrollment
    from suppilo.loyalty.models import LoyaltyEntry
    from suppilo.offers.models import Coupon

    def rows(model: Any, *where: Any) -> list[dict[str, Any]]:
        return _rows(session, model, model.workspace_id == workspace_id, *where, order=model.id)

    return {
        "journey_enrollments": rows(Enrollment, Enrollment.contact_id == cid),
        "coupons": rows(Coupon, Coupon.contact_id == cid),
        "loyalty_points": rows(LoyaltyEntry, LoyaltyEntry.contact_id == cid),
        "referral_code": rows(ReferralCode, ReferralCode.contact_id == cid),
        "referrals": rows(Referral, (Referral.referrer_id == cid) | (Referral.referred_id == cid)),
        "survey_answers": rows(SurveyResponse, SurveyResponse.contact_id == cid),
        "reviews": rows(Review, Review.contact_id == cid),
    }


def _sales_rows(session: Session, workspace_id: int, cid: int) -> dict[str, Any]:
    """Deals the person is the contact of or part of the buying group of, tasks about them, logged activities."""
    from suppilo.deals.models import Activity, Deal, DealContact, Task

    def rows(model: Any, *where: Any) -> list[dict[str, Any]]:
        return _rows(session, model, model.workspace_id == workspace_id, *where, order=model.id)

    return {
        "deals": rows(Deal, Deal.contact_id == cid),
        "deal_roles": rows(DealContact, DealContact.contact_id == cid),
        "tasks": rows(Task, Task.contact_id == cid),
        "activities": rows(Activity, Activity.contact_id == cid),
    }


def erase_contact(session: Session, workspace_id: int, contact_id: int, *, actor: str = "system") -> dict[str, int]:
    """Remove the person's personal data; returns how many rows of each kind were changed or removed."""
    contact = find_contact(session, workspace_id, contact_id=contact_id)
    cid = contact.id
    now = utcnow()
    counts: dict[str, int] = {}

    def run(name: str, stmt: Any) -> None:
        counts[name] = rowcount(session.execute(stmt))

    session.flush()
    counts["messages_skipped"] = outbox.skip_for_contact(session, workspace_id, cid, "erased")
    from suppilo.journeys import service as journeys_service

    counts["journeys_exited"] = journeys_service.exit_contact(session, workspace_id, cid, "erased")
    run(
        "message_bodies",
        delete(OutboxBody).where(
            OutboxBody.workspace_id == workspace_id,
            OutboxBody.outbox_id.in_(
                select(OutboxMessage.id).where(
                    OutboxMessage.workspace_id == workspace_id, OutboxMessage.contact_id == cid
                )
            ),
        ),
    )
    run(
        "messages",
        update(OutboxMessage)
        .where(OutboxMessage.workspace_id == workspace_id, OutboxMessage.contact_id == cid)
        .values(to_address=None, extra={}, links=[], last_error=None, updated_at=now),
    )
    run(
        "events",
        update(Event)
        .where(Event.workspace_id == workspace_id, Event.contact_id == cid)
        .values(properties={}, context={}, anonymous_id=None),
    )
    run(
        "touches",
        update(Touch)
        .where(Touch.workspace_id == workspace_id, Touch.contact_id == cid)
        .values(referrer=None, landing_url=None, term=None, content=None),
    )
    run(
        "form_submissions",
        update(FormSubmission)
        .where(FormSubmission.workspace_id == workspace_id, FormSubmission.contact_id == cid)
        .values(data={}, consent_text=None, page_url=None, ip=None, user_agent=None),
    )
    run(
        "consent_records",
        delete(ConsentRecord).where(ConsentRecord.workspace_id == workspace_id, ConsentRecord.contact_id == cid),
    )
    from suppilo.advocacy.models import ReferralCode, Review, SurveyResponse

    # Advocacy: the personal referral code goes (links shared earlier stop working), survey comments and the
    # person's reviews (their words, published with their name) are removed; referral rows keep ids only.
    run(
        "referral_codes",
        delete(ReferralCode).where(ReferralCode.workspace_id == workspace_id, ReferralCode.contact_id == cid),
    )
    run(
        "survey_comments",
        update(SurveyResponse)
        .where(SurveyResponse.workspace_id == workspace_id, SurveyResponse.contact_id == cid)
        .values(comment=None),
    )
    run("reviews", delete(Review).where(Review.workspace_id == workspace_id, Review.contact_id == cid))
    from suppilo.deals.models import Activity, DealContact

    # Sales: notes of calls and meetings with the person are their words; the activity stays (kind and time count
    # in a deal's history) without its text. Their place in buying groups goes; deals keep the anonymised contact.
    run(
        "activity_notes",
        update(Activity).where(Activity.workspace_id == workspace_id, Activity.contact_id == cid).values(body=""),
    )
    run(
        "deal_roles",
        delete(DealContact).where(DealContact.workspace_id == workspace_id, DealContact.contact_id == cid),
    )
    run(
        "identities",
        delete(ContactIdentity).where(ContactIdentity.workspace_id == workspace_id, ContactIdentity.contact_id == cid),
    )
    run("tags", delete(ContactTag).where(ContactTag.workspace_id == workspace_id, ContactTag.contact_id == cid))
    run(
        "orders",
        update(Order)
        .where(Order.workspace_id == workspace_id, Order.contact_id == cid)
        .values(properties={}, coupon_code=None),
    )
    run("carts", update(Cart).where(Cart.workspace_id == workspace_id, Cart.contact_id == cid).values(lines=[]))
    run(
        "merge_snapshots",
        update(ContactMerge)
        .where(ContactMerge.workspace_id == workspace_id, ContactMerge.contact_id == cid)
        .values(snapshot={}),
    )
    run(
        "audit_details",
        update(AuditLog)
        .where(AuditLog.workspace_id == workspace_id, AuditLog.subject_type == "contact", AuditLog.subject_id == cid)
        .values(details={}),
    )
    for column in PERSONAL_CONTACT_COLUMNS:
        setattr(contact, column, None)
    contact.properties = {}
    contact.is_anonymous = True
    contact.version = (contact.version or 0) + 1
    session.flush()
    workspaces_service.record_audit(
        session,
        workspace_id,
        actor=actor,
        action="privacy.erase",
        subject_type="contact",
        subject_id=cid,
        details={"counts": counts},
        at=now,
    )
    session.flush()
    return counts


def object_to_marketing(
    session: Session,
    workspace_id: int,
    contact_id: int,
    *,
    actor: str = "system",
    source: str = "privacy_request",
    ip: str | None = None,
    user_agent: str | None = None,
) -> int:
    """Record an objection (Art. 21): ``can_send_marketing`` denies every topic and marketing scoring must skip
    the contact (``consent.service.has_objection``); waiting marketing messages are skipped. Returns the record id."""
    contact = find_contact(session, workspace_id, contact_id=contact_id)
    record = consent_service.record_consent(
        session,
        workspace_id,
        contact.id,
        action="objection",
        source=source,
        ip=ip,
        user_agent=user_agent,
        request_double_opt_in=False,
    )
    skipped = rowcount(
        session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.workspace_id == workspace_id,
                OutboxMessage.contact_id == contact.id,
                OutboxMessage.kind == "marketing",
                OutboxMessage.status.in_(("queued", "deferred")),
            )
            .values(status="skipped", last_error="objection", updated_at=utcnow())
        )
    )
    workspaces_service.record_audit(
        session,
        workspace_id,
        actor=actor,
        action="privacy.object",
        subject_type="contact",
        subject_id=contact.id,
        details={"consent_record_id": record.id, "messages_skipped": skipped},
    )
    session.flush()
    return record.id
