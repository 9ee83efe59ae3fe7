"""Reviews on the database: moderation, the loyalty bonus once per approved review, exports for the website with
shortened names and spreadsheet-safe CSV, averages per product."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import select

from suppilo.advocacy import service
from suppilo.advocacy.schemas import ReviewCreate
from suppilo.commerce.models import Product
from suppilo.errors import DomainError, NotFound
from suppilo.loyalty import service as loyalty
from suppilo.loyalty.models import LoyaltyEntry
from suppilo.loyalty.schemas import ProgramIn
from tests.integration.advocacy.helpers import contact, unique_email


def _product(session, ws: int, sku: str) -> None:
    session.add(Product(workspace_id=ws, sku=sku, name=sku.title(), price_minor=1000, currency="EUR"))
    session.flush()


def test_short_names() -> None:
    assert service.short_name("Anna", "Korhonen") == "Anna K."
    assert service.short_name("Anna", None) == "Anna"
    assert service.short_name(None, "korhonen") == "K."
    assert service.short_name(" ", "") == "Anonymous"


def test_moderation_and_loyalty_bonus_once(session, workspace) -> None:
    ws = workspace.id
    loyalty.put_program(session, ws, ProgramIn(enabled=True, bonus_events={"review": 50}))
    anna = contact(session, ws, unique_email("anna"), first_name="Anna", last_name="Korhonen")
    _product(session, ws, "tent-2p")
    review, created = service.create_review(
        session, ws, ReviewCreate(contact_id=anna.id, product_sku="tent-2p", rating=5, text="Dry all night.")
    )
    assert created and (review.status, review.author_name) == ("pending", "Anna K.")
    assert json.loads(service.export_json(session, ws))["reviews"] == []  # pending reviews are not published
    with pytest.raises(DomainError) as err:
        service.reject(session, ws, review.id, reason=" ")
    assert err.value.code == "reason_required"
    service.approve(session, ws, review.id, actor="test")
    service.approve(session, ws, review.id, actor="test")  # approving twice pays once
    entries = session.scalars(
        select(LoyaltyEntry).where(LoyaltyEntry.workspace_id == ws, LoyaltyEntry.contact_id == anna.id)
    ).all()
    assert [(e.kind, e.points) for e in entries] == [("bonus", 50)]
    bad, _ = service.create_review(session, ws, ReviewCreate(contact_id=anna.id, rating=1, text="spam spam"))
    rejected = service.reject(session, ws, bad.id, reason="spam", actor="test")
    assert (rejected.status, rejected.reason) == ("rejected", "spam")
    exported = json.loads(service.export_json(session, ws))
    assert [(r["id"], r["author"], r["rating"]) for r in exported["reviews"]] == [(review.id, "Anna K.", 5)]
    assert exported["products"] == [{"product_sku": "tent-2p", "reviews": 1, "average": 5.0}]
    assert [r.id for r in service.list_reviews(session, ws, status="rejected")] == [bad.id]
    with pytest.raises(NotFound):
        service.create_review(session, ws, ReviewCreate(rating=3, product_sku="no-such-sku"))


def test_idempotency_key_and_average_per_product(session, workspace, other_workspace) -> None:
    ws = workspace.id
    _product(session, ws, "stove")
    ids = []
    for rating in (5, 4, 2):
        r, _ = service.create_review(
            session, ws, ReviewCreate(author_name="Mikko Virtanen", product_sku="stove", rating=rating)
        )
        service.approve(session, ws, r.id)
        ids.append(r.id)
    r1, c1 = service.create_review(session, ws, ReviewCreate(rating=3, idempotency_key="shop:77"))
    r2, c2 = service.create_review(session, ws, ReviewCreate(rating=3, idempotency_key="shop:77"))
    assert (c1, c2, r1.id == r2.id) == (True, False, True)
    assert service.product_ratings(session, ws) == [{"product_sku": "stove", "reviews": 3, "average": 3.67}]
    assert service.product_ratings(session, other_workspace.id) == []
    with pytest.raises(NotFound):
        service.approve(session, other_workspace.id, ids[0])


def test_csv_export_escapes_text_and_neutralises_formulas(session, workspace) -> None:
    ws = workspace.id
    nasty = '=HYPERLINK("http://evil.example","click"), "quoted"\nsecond line'
    r, _ = service.create_review(
        session, ws, ReviewCreate(author_name="-Eve Hacker", rating=4, title="@SUM(A1)", text=nasty)
    )
    service.approve(session, ws, r.id)
    body = service.export_csv(session, ws)
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["id", "product_sku", "rating", "title", "text", "author", "date"]
    assert len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["text"] == "'" + nasty
    assert row["title"] == "'@SUM(A1)"
    assert row["author"] == "'-Eve H."
    assert row["rating"] == "4"
