"""Reviews: a rating (1–5) and text, moderated (pending → approved / rejected with a reason), exported for the
website (approved only, names shortened), averaged per product; an approved review earns the loyalty bonus."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suppilo.advocacy.models import Review
from suppilo.advocacy.schemas import ReviewCreate
from suppilo.contacts import service as contacts_service
from suppilo.db.base import utcnow
from suppilo.errors import DomainError, NotFound
from suppilo.events import service as events_service
from suppilo.transfer.exporter import neutralise

STATUSES = ("pending", "approved", "rejected")
EXPORT_COLUMNS = ["id", "product_sku", "rating", "title", "text", "author", "date"]


class ReviewError(DomainError):
    """A refused review operation."""


def short_name(first: str | None, last: str | None) -> str:
    """ "Anna Korhonen" → "Anna K." (a first name alone stays; nothing gives "Anonymous")."""
    first = (first or "").strip()
    last = (last or "").strip()
    if not first and not last:
        return "Anonymous"
    if not first:
        return f"{last[0].upper()}."
    return f"{first} {last[0].upper()}." if last else first


def _split_name(name: str) -> tuple[str, str]:
    parts = name.split()
    return (parts[0], parts[-1]) if len(parts) > 1 else ((parts[0], "") if parts else ("", ""))


def create_review(
    session: Session, workspace_id: int, data: ReviewCreate, *, source: str = "api", now: datetime | None = None
) -> tuple[Review, bool]:
    """A pending review; with an ``idempotency_key`` a retry returns the first one. Returns (review, created)."""
    author = ""
    if data.contact_id is not None:
        contact = contacts_service.get_contact(session, workspace_id, data.contact_id)
        author = short_name(contact.first_name, contact.last_name)
    if data.author_name:
        author = short_name(*_split_name(data.author_name))
    if data.product_sku:
        from suppilo.commerce.models import Product

        if (
            session.scalar(
                select(Product.id).where(Product.workspace_id == workspace_id, Product.sku == data.product_sku)
            )
            is None
        ):
            raise NotFound("product_sku", f"no product with SKU {data.product_sku!r}")
    key = data.idempotency_key
    if key:
        existing = session.scalar(select(Review).where(Review.workspace_id == workspace_id, Review.dedupe_key == key))
        if existing is not None:
            return existing, False
    review = Review(
        workspace_id=workspace_id,
        contact_id=data.contact_id,
        product_sku=data.product_sku,
        rating=data.rating,
        title=(data.title or "").strip() or None,
        text=data.text.strip(),
        author_name=author or "Anonymous",
        status="pending",
        source=source,
        dedupe_key=key,
        created_at=now or utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(review)
            session.flush()
    except IntegrityError:
        again = session.scalar(select(Review).where(Review.workspace_id == workspace_id, Review.dedupe_key == key))
        if again is None:
            raise
        return again, False
    if review.contact_id is not None:
        events_service.record_event(
            session, workspace_id, review.contact_id, "Review Submitted",
            {"review_id": review.id, "rating": review.rating, "product_sku": review.product_sku}, review.created_at,
            message_id=f"review-submitted:{review.id}",
        )  # fmt: skip
    return review, True


def get_review(session: Session, workspace_id: int, review_id: int) -> Review:
    review = session.scalar(select(Review).where(Review.workspace_id == workspace_id, Review.id == review_id))
    if review is None:
        raise NotFound("review_id", f"review {review_id} not found")
    return review


def list_reviews(
    session: Session,
    workspace_id: int,
    *,
    status: str | None = None,
    product_sku: str | None = None,
    limit: int = 100,
) -> list[Review]:
    if status is not None and status not in STATUSES:
        raise ReviewError("status", f"status must be one of {', '.join(STATUSES)}", code="invalid_status")
    q = select(Review).where(Review.workspace_id == workspace_id)
    if status:
        q = q.where(Review.status == status)
    if product_sku:
        q = q.where(Review.product_sku == product_sku)
    return list(session.scalars(q.order_by(Review.created_at.desc(), Review.id.desc()).limit(limit)))


def approve(
    session: Session, workspace_id: int, review_id: int, *, actor: str | None = None, now: datetime | None = None
) -> Review:
    """Publish a review; its author earns the loyalty programme's ``review`` bonus once (when the programme is
    enabled and has that bonus)."""
    review = get_review(session, workspace_id, review_id)
    now = now or utcnow()
    if review.status != "approved":
        review.status = "approved"
        review.reason = None
        review.moderated_at = now
        review.moderated_by = actor
        session.flush()
    if review.contact_id is not None:
        from suppilo.loyalty import service as loyalty_service

        program = loyalty_service.get_program(session, workspace_id)
        if program.enabled and "review" in (program.bonus_events or {}):
            loyalty_service.award_points(
                session, workspace_id, review.contact_id, idempotency_key=f"review:{review.id}", event="review",
                reason=f"review {review.id}", now=now,
            )  # fmt: skip
        events_service.record_event(
            session, workspace_id, review.contact_id, "Review Approved",
            {"review_id": review.id, "rating": review.rating, "product_sku": review.product_sku}, now,
            message_id=f"review-approved:{review.id}",
        )  # fmt: skip
    return review


def reject(
    session: Session, workspace_id: int, review_id: int, *, reason: str | None, actor: str | None = None
) -> Review:
    """Hide a review, with the reason (required)."""
    if not reason or not reason.strip():
        raise ReviewError("reason", "say why the review is rejected", code="reason_required")
    review = get_review(session, workspace_id, review_id)
    review.status = "rejected"
    review.reason = reason.strip()[:500]
    review.moderated_at = utcnow()
    review.moderated_by = actor
    session.flush()
    return review


def _export_rows(session: Session, workspace_id: int, product_sku: str | None) -> list[dict[str, Any]]:
    q = select(Review).where(Review.workspace_id == workspace_id, Review.status == "approved")
    if product_sku:
        q = q.where(Review.product_sku == product_sku)
    return [
        {
            "id": r.id,
            "product_sku": r.product_sku,
            "rating": r.rating,
            "title": r.title,
            "text": r.text,
            "author": r.author_name,
            "date": r.created_at.date().isoformat(),
        }
        for r in session.scalars(q.order_by(Review.created_at.desc(), Review.id.desc()))
    ]


def export_json(session: Session, workspace_id: int, *, product_sku: str | None = None) -> str:
    """Approved reviews as a JSON document for the website: the reviews and the averages per product."""
    return json.dumps(
        {
            "reviews": _export_rows(session, workspace_id, product_sku),
            "products": product_ratings(session, workspace_id),
        },
        ensure_ascii=False,
    )


def export_csv(session: Session, workspace_id: int, *, product_sku: str | None = None) -> str:
    """Approved reviews as CSV (RFC 4180 quoting; cells that a spreadsheet would run as a formula are neutralised)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in _export_rows(session, workspace_id, product_sku):
        writer.writerow({k: neutralise(v) if isinstance(v, str) else ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def product_ratings(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    """Average rating and count of approved reviews per product."""
    rows = session.execute(
        select(Review.product_sku, func.count(Review.id), func.avg(Review.rating))
        .where(Review.workspace_id == workspace_id, Review.status == "approved", Review.product_sku.is_not(None))
        .group_by(Review.product_sku)
        .order_by(Review.product_sku)
    )
    return [{"product_sku": sku, "reviews": int(n), "average": round(float(avg), 2)} for sku, n, avg in rows]
