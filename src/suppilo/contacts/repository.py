"""Contact queries: the keyset-paginated list and search, tags of a page, and the timeline sources."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.orm import Session

from suppilo.capture.models import FormSubmission
from suppilo.commerce.models import Order
from suppilo.contacts.models import Contact, ContactMerge, ContactTag, StageChange
from suppilo.contacts.schemas import ContactFilter
from suppilo.events.models import Event, Touch


def prefix_range(column: Any, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix`` as an index range (binary/C collation order)."""
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < upper)


SEARCH_COLUMNS = ("email", "first_name_lower", "last_name_lower")
# A search term matching fewer rows than this per column is answered from the three prefix indexes;
# a more common one by walking the id index newest first (matches are then dense enough to fill a page fast).
SPARSE_MATCHES = 1000


def search_text(q: str) -> str:
    """``q`` lower-cased with runs of white space collapsed."""
    return " ".join(q.lower().split())


def is_single_term(text: str) -> bool:
    """Whether a search is one prefix tried on email, first and last name (not "first last" or an email)."""
    return bool(text) and " " not in text and "@" not in text


def sparse_candidates(session: Session, workspace_id: int, text: str, *, before_id: int | None) -> list[int] | None:
    """Ids (newest first) whose email, first or last name start with ``text``, or None when there are many."""
    found: set[int] = set()
    for name in SEARCH_COLUMNS:
        column = getattr(Contact, name)
        stmt = select(Contact.id).where(Contact.workspace_id == workspace_id, prefix_range(column, text))
        if before_id is not None:
            stmt = stmt.where(Contact.id < before_id)
        ids = list(session.scalars(stmt.limit(SPARSE_MATCHES)))
        if len(ids) >= SPARSE_MATCHES:
            return None
        found.update(ids)
    return sorted(found, reverse=True)


def dense_condition(text: str) -> ColumnElement[bool]:
    """The single-term search written so that no prefix index is used (the id order is walked instead)."""
    n = len(text)
    return or_(*(func.substr(getattr(Contact, name), 1, n) == text for name in SEARCH_COLUMNS))


def search_condition(q: str) -> ColumnElement[bool] | None:
    """Case-insensitive prefix match of ``q`` on email, first name, last name, or "first last"."""
    text = search_text(q)
    if not text:
        return None
    if " " in text:
        first, rest = text.split(" ", 1)
        return and_(Contact.first_name_lower == first, prefix_range(Contact.last_name_lower, rest))
    if "@" in text:
        return prefix_range(Contact.email, text)
    return or_(
        prefix_range(Contact.email, text),
        prefix_range(Contact.first_name_lower, text),
        prefix_range(Contact.last_name_lower, text),
    )


def list_statement(
    workspace_id: int,
    flt: ContactFilter,
    *,
    before_id: int | None,
    limit: int,
    search: ColumnElement[bool] | None = None,
) -> Select[Contact]:
    """Contacts of a workspace matching ``flt``, newest first (keyset on id).

    ``search`` replaces the condition derived from ``flt.q`` (the service picks one that suits the term).
    """
    stmt = select(Contact).where(Contact.workspace_id == workspace_id)
    if not flt.include_anonymous:
        stmt = stmt.where(Contact.is_anonymous == false())
    if flt.lifecycle_stage:
        stmt = stmt.where(Contact.lifecycle_stage == flt.lifecycle_stage)
    if flt.company_id is not None:
        stmt = stmt.where(Contact.company_id == flt.company_id)
    if flt.owner_id is not None:
        stmt = stmt.where(Contact.owner_id == flt.owner_id)
    if flt.country:
        stmt = stmt.where(Contact.country == flt.country.strip().upper())
    if flt.created_after is not None:
        stmt = stmt.where(Contact.created_at >= flt.created_after)
    if flt.created_before is not None:
        stmt = stmt.where(Contact.created_at < flt.created_before)
    if flt.tag:
        stmt = stmt.where(
            exists().where(
                ContactTag.workspace_id == workspace_id,
                ContactTag.tag == flt.tag.strip().lower(),
                ContactTag.contact_id == Contact.id,
            )
        )
    if search is not None:
        stmt = stmt.where(search)
    elif flt.q:
        cond = search_condition(flt.q)
        if cond is not None:
            stmt = stmt.where(cond)
    if before_id is not None:
        stmt = stmt.where(Contact.id < before_id)
    return stmt.order_by(Contact.id.desc()).limit(limit)


def tags_of(session: Session, workspace_id: int, contact_ids: Iterable[int]) -> dict[int, list[str]]:
    """Sorted tags of each contact."""
    ids = list(contact_ids)
    out: dict[int, list[str]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = session.execute(
        select(ContactTag.contact_id, ContactTag.tag)
        .where(ContactTag.workspace_id == workspace_id, ContactTag.contact_id.in_(ids))
        .order_by(ContactTag.contact_id, ContactTag.tag)
    )
    for contact_id, tag in rows:
        out[contact_id].append(tag)
    return out


def by_id(session: Session, workspace_id: int, contact_id: int) -> Contact | None:
    """The contact with this id in this workspace."""
    return session.scalar(select(Contact).where(Contact.workspace_id == workspace_id, Contact.id == contact_id))


def by_email(session: Session, workspace_id: int, email: str) -> Contact | None:
    """The contact with this normalised email in this workspace."""
    return session.scalar(select(Contact).where(Contact.workspace_id == workspace_id, Contact.email == email))


def merged_into(session: Session, workspace_id: int, merged_id: int) -> int | None:
    """The contact that ``merged_id`` was merged into, if it was."""
    return session.scalar(
        select(ContactMerge.contact_id)
        .where(ContactMerge.workspace_id == workspace_id, ContactMerge.merged_id == merged_id)
        .order_by(ContactMerge.id.desc())
        .limit(1)
    )


def timeline_rows(
    session: Session, workspace_id: int, contact_id: int, *, before: datetime | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` newest items of each source older than ``before``, unsorted across sources."""
    items: list[dict[str, Any]] = []

    def newest(model: Any, time_col: Any) -> Select[Any]:
        stmt = select(model).where(model.workspace_id == workspace_id, model.contact_id == contact_id)
        if before is not None:
            stmt = stmt.where(time_col < before)
        return stmt.order_by(time_col.desc(), model.id.desc()).limit(limit)

    for ev in session.scalars(newest(Event, Event.occurred_at)):
        title = ev.name if ev.kind == "track" else f"{ev.kind}: {ev.name}" if ev.name else ev.kind
        items.append(
            {
                "type": "event",
                "at": ev.occurred_at,
                "title": title,
                "data": {"id": ev.id, "kind": ev.kind, "name": ev.name, "properties": ev.properties},
            }
        )
    for ch in session.scalars(newest(StageChange, StageChange.changed_at)):
        items.append(
            {
                "type": "stage_change",
                "at": ch.changed_at,
                "title": f"{ch.from_stage or '(new)'} → {ch.to_stage}",
                "data": {
                    "id": ch.id,
                    "from_stage": ch.from_stage,
                    "to_stage": ch.to_stage,
                    "reason": ch.reason,
                    "source": ch.source,
                    "actor": ch.actor,
                },
            }
        )
    for order in session.scalars(newest(Order, Order.placed_at)):
        items.append(
            {
                "type": "order",
                "at": order.placed_at,
                "title": f"Order {order.external_id} ({order.status})",
                "data": {
                    "id": order.id,
                    "external_id": order.external_id,
                    "status": order.status,
                    "total_minor": order.total_minor,
                    "refunded_minor": order.refunded_minor,
                    "currency": order.currency,
                },
            }
        )
    for sub in session.scalars(newest(FormSubmission, FormSubmission.submitted_at)):
        items.append(
            {
                "type": "form_submission",
                "at": sub.submitted_at,
                "title": "Form submitted",
                "data": {
                    "id": sub.id,
                    "form_id": sub.form_id,
                    "data": sub.data,
                    "consent_given": sub.consent_given,
                    "page_url": sub.page_url,
                },
            }
        )
    for touch in session.scalars(newest(Touch, Touch.occurred_at)):
        label = " / ".join(p for p in (touch.source, touch.medium, touch.campaign) if p)
        items.append(
            {
                "type": "touch",
                "at": touch.occurred_at,
                "title": f"Touch: {touch.channel}" + (f" ({label})" if label else ""),
                "data": {
                    "id": touch.id,
                    "channel": touch.channel,
                    "source": touch.source,
                    "medium": touch.medium,
                    "campaign": touch.campaign,
                    "landing_url": touch.landing_url,
                },
            }
        )
    return items
