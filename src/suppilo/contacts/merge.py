"""Merging two contacts of a workspace into one: history, identities, tags and fields move to the kept contact."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from suppilo.capture.models import FormSubmission
from suppilo.commerce.models import Cart, Order
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact, ContactIdentity, ContactMerge, ContactTag
from suppilo.db.base import utcnow
from suppilo.engine.lifecycle import position_of
from suppilo.errors import DomainError, NotFound
from suppilo.events.models import Event, Touch
from suppilo.workspaces.service import record_audit

# Filled on the kept contact from the merged one when empty there.
FILL_FIELDS = (
    "first_name",
    "last_name",
    "first_name_lower",
    "last_name_lower",
    "phone",
    "language",
    "country",
    "region",
    "city",
    "timezone",
    "job_title",
    "owner_id",
    "company_id",
)
UNIQUE_FIELDS = ("email", "external_id")
TOUCH_FIELDS = ("channel", "source", "campaign", "at")


def _snapshot(contact: Contact) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in Contact.__table__.columns:
        value = getattr(contact, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def merge_contacts(
    session: Session, workspace_id: int, keep_id: int, merge_id: int, *, reason: str, actor: str | None
) -> Contact:
    """Merge contact ``merge_id`` into ``keep_id`` and delete it; returns the kept contact.

    Events, touches, stage history, orders, carts, form submissions, deals, tasks, activities, consent records,
    reviews, survey answers, identities and tags move to the kept
    contact; its empty fields are filled from the merged one; the earliest first touch and the latest touch
    win; a merged contact further along the funnel takes the kept one there (stage change reason "merge").
    """
    if keep_id == merge_id:
        raise DomainError("merge_id", "a contact cannot be merged with itself", code="same_contact")
    keep = session.scalar(select(Contact).where(Contact.workspace_id == workspace_id, Contact.id == keep_id))
    if keep is None:
        raise NotFound("keep_id", f"contact {keep_id} not found")
    merged = session.scalar(select(Contact).where(Contact.workspace_id == workspace_id, Contact.id == merge_id))
    if merged is None:
        raise NotFound("merge_id", f"contact {merge_id} not found")
    session.flush()
    snapshot = _snapshot(merged)

    for model in (Event, Touch, Order, Cart, FormSubmission, ContactIdentity):
        session.execute(
            update(model)
            .where(model.workspace_id == workspace_id, model.contact_id == merge_id)
            .values(contact_id=keep_id)
            .execution_options(synchronize_session=False)
        )
    contacts_service.repoint_stage_history(session, workspace_id, merge_id, keep_id)
    from suppilo.advocacy.merging import move_contact as move_advocacy
    from suppilo.consent.models import ConsentRecord
    from suppilo.deals import service as deals_service
    from suppilo.deals.models import Activity, Deal, Task
    from suppilo.journeys import service as journeys_service
    from suppilo.loyalty import service as loyalty_service
    from suppilo.messaging.outbox_models import OutboxMessage
    from suppilo.offers import service as offers_service

    # Deals, tasks, activities and the consent ledger would otherwise lose their contact (or be deleted with it).
    for owned in (Deal, Task, Activity, ConsentRecord):
        session.execute(
            update(owned)
            .where(owned.workspace_id == workspace_id, owned.contact_id == merge_id)
            .values(contact_id=keep_id)
            .execution_options(synchronize_session=False)
        )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.workspace_id == workspace_id, OutboxMessage.contact_id == merge_id)
        .values(contact_id=keep_id)
        .execution_options(synchronize_session=False)
    )
    journeys_service.move_contact(session, workspace_id, keep_id, merge_id)
    deals_service.move_contact(session, workspace_id, keep_id, merge_id)  # places in deals' buying groups
    offers_service.move_contact(session, workspace_id, keep_id, merge_id)
    loyalty_service.move_contact(session, workspace_id, keep_id, merge_id)
    move_advocacy(session, workspace_id, keep_id, merge_id)  # reviews and survey answers
    keep_tags = set(
        session.scalars(
            select(ContactTag.tag).where(ContactTag.workspace_id == workspace_id, ContactTag.contact_id == keep_id)
        )
    )
    merged_tags = list(
        session.scalars(
            select(ContactTag.tag).where(ContactTag.workspace_id == workspace_id, ContactTag.contact_id == merge_id)
        )
    )
    session.execute(
        delete(ContactTag)
        .where(ContactTag.workspace_id == workspace_id, ContactTag.contact_id == merge_id)
        .execution_options(synchronize_session=False)
    )
    for tag in merged_tags:
        if tag not in keep_tags:
            session.add(ContactTag(contact_id=keep_id, tag=tag, workspace_id=workspace_id))

    # Unique values leave the merged row before the kept one takes them.
    taken = {f: getattr(merged, f) for f in UNIQUE_FIELDS}
    for f in UNIQUE_FIELDS:
        setattr(merged, f, None)
    session.flush()
    for f, value in taken.items():
        if getattr(keep, f) is None and value is not None:
            setattr(keep, f, value)
    for f in FILL_FIELDS:
        if getattr(keep, f) is None and getattr(merged, f) is not None:
            setattr(keep, f, getattr(merged, f))
    keep.properties = {**(merged.properties or {}), **(keep.properties or {})}
    keep.is_anonymous = bool(keep.is_anonymous and merged.is_anonymous and keep.email is None)
    if merged.first_touch_at is not None and (
        keep.first_touch_at is None or merged.first_touch_at < keep.first_touch_at
    ):
        for f in TOUCH_FIELDS:
            setattr(keep, f"first_touch_{f}", getattr(merged, f"first_touch_{f}"))
    if merged.latest_touch_at is not None and (
        keep.latest_touch_at is None or merged.latest_touch_at > keep.latest_touch_at
    ):
        for f in TOUCH_FIELDS:
            setattr(keep, f"latest_touch_{f}", getattr(merged, f"latest_touch_{f}"))
    if merged.first_seen_at is not None and (keep.first_seen_at is None or merged.first_seen_at < keep.first_seen_at):
        keep.first_seen_at = merged.first_seen_at
    if merged.last_seen_at is not None and (keep.last_seen_at is None or merged.last_seen_at > keep.last_seen_at):
        keep.last_seen_at = merged.last_seen_at

    stages = contacts_service.stage_specs(session, workspace_id)
    keep_pos = position_of(stages, keep.lifecycle_stage)
    merged_pos = position_of(stages, merged.lifecycle_stage)
    if keep_pos is not None and merged_pos is not None and merged_pos > keep_pos:
        contacts_service.change_stage(
            session, keep, merged.lifecycle_stage, reason="merge", source="merge", actor=actor, stages=stages
        )
    keep.version = (keep.version or 1) + 1
    now = utcnow()
    session.add(
        ContactMerge(
            workspace_id=workspace_id,
            contact_id=keep_id,
            merged_id=merge_id,
            merged_at=now,
            reason=reason[:200],
            snapshot=snapshot,
        )
    )
    session.delete(merged)
    record_audit(
        session,
        workspace_id,
        actor=actor or "system",
        action="contact.merged",
        subject_type="contact",
        subject_id=keep_id,
        details={"merged_id": merge_id, "reason": reason},
        at=now,
    )
    session.flush()
    return keep


# Shown side by side before a merge (owner_id and company_id are shown by the caller with names).
PREVIEW_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "job_title",
    "company_id",
    "owner_id",
    "language",
    "country",
    "region",
    "city",
    "timezone",
    "external_id",
)


def preview(session: Session, workspace_id: int, keep: Contact, merged: Contact) -> dict[str, Any]:
    """What ``merge_contacts(keep.id, merged.id)`` would leave on the kept contact, without changing anything:
    ``fields`` rows of ``(field, kept value, merged value, result, from)`` where ``from`` is ``keep``, ``merged``
    or ``""`` (both empty), and the resulting lifecycle stage, tags, properties and first/latest touch."""
    rows = []
    for f in PREVIEW_FIELDS:
        a, b = getattr(keep, f), getattr(merged, f)
        if a is not None:
            rows.append((f, a, b, a, "keep"))
        elif b is not None:
            rows.append((f, a, b, b, "merged"))
        else:
            rows.append((f, a, b, None, ""))
    stages = contacts_service.stage_specs(session, workspace_id)
    keep_pos = position_of(stages, keep.lifecycle_stage)
    merged_pos = position_of(stages, merged.lifecycle_stage)
    stage = keep.lifecycle_stage
    if keep_pos is not None and merged_pos is not None and merged_pos > keep_pos:
        stage = merged.lifecycle_stage
    tags = sorted(
        set(
            session.scalars(
                select(ContactTag.tag).where(
                    ContactTag.workspace_id == workspace_id, ContactTag.contact_id.in_([keep.id, merged.id])
                )
            )
        )
    )
    first = keep
    if merged.first_touch_at is not None and (
        keep.first_touch_at is None or merged.first_touch_at < keep.first_touch_at
    ):
        first = merged
    latest = keep
    if merged.latest_touch_at is not None and (
        keep.latest_touch_at is None or merged.latest_touch_at > keep.latest_touch_at
    ):
        latest = merged
    return {
        "fields": rows,
        "lifecycle_stage": stage,
        "tags": tags,
        "properties": {**(merged.properties or {}), **(keep.properties or {})},
        "first_touch": (first.first_touch_channel, first.first_touch_source, first.first_touch_at),
        "latest_touch": (latest.latest_touch_channel, latest.latest_touch_source, latest.latest_touch_at),
    }
