"""Recommendations computed from real orders: rules per product, picks per contact, best-sellers, the periodic job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from suppilo.commerce import service as commerce
from suppilo.commerce.schemas import OrderCreate, OrderLineIn, ProductCreate, ProductUpdate
from suppilo.contacts.models import Contact
from suppilo.errors import NotFound
from suppilo.messaging import service as messaging
from suppilo.recommendations import service
from suppilo.recommendations.models import RecommendationRule, RecommendationRun
from suppilo.recommendations.tasks import run_recommendations

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CATALOGUE = [
    # sku, name, category, price, properties
    ("phone", "Phone X", "phones", 49900, {}),
    ("case", "Phone case", "accessories", 1990, {}),
    ("charger", "Fast charger", "accessories", 2990, {}),
    ("gadget", "Old gadget", "accessories", 990, {"active": False}),
    ("tv", "TV 55", "video", 89900, {}),
    ("cable", "HDMI cable", "video", 1290, {}),
    ("headphones", "Headphones", "audio", 9900, {}),
    ("speaker", "Speaker", "audio", 14900, {}),
]


def _catalogue(session, ws: int) -> dict[str, int]:
    ids = {}
    for sku, name, category, price, props in CATALOGUE:
        p = commerce.create_product(
            session,
            ws,
            ProductCreate(
                sku=sku,
                name=name,
                category=category,
                price_minor=price,
                currency="EUR",
                url=f"https://shop.example.fi/p/{sku}",
                properties=props,
            ),
        )
        ids[sku] = p.id
    return ids


def _contact(session, ws: int, name: str) -> int:
    c = Contact(workspace_id=ws, email=f"{name}@example.fi", first_name=name.title())
    session.add(c)
    session.flush()
    return c.id


def _order(session, ws: int, ref: str, contact_id: int, skus: list[str], days_ago: float = 10) -> int:
    order, _ = commerce.upsert_order(
        session,
        ws,
        OrderCreate(
            external_id=ref,
            contact_id=contact_id,
            placed_at=NOW - timedelta(days=days_ago),
            currency="EUR",
            lines=[OrderLineIn(sku=s, name=s, unit_price_minor=1000) for s in skus],
        ),
    )
    return order.id


def _shop(session, ws: int) -> dict[str, Any]:
    """Twelve revenue orders and one cancelled order (see the counts in the tests)."""
    ids = _catalogue(session, ws)
    c = {n: _contact(session, ws, n) for n in ("c1", "c2", "c3", "c4", "c5", "c6", "target", "newcomer")}
    _order(session, ws, "o1", c["c1"], ["phone", "case"])
    _order(session, ws, "o2", c["c2"], ["phone", "case"])
    _order(session, ws, "o3", c["c3"], ["phone", "case", "charger"])
    _order(session, ws, "o4", c["c4"], ["phone", "case", "charger", "gadget"])
    _order(session, ws, "o5", c["c5"], ["phone", "gadget"])
    _order(session, ws, "o6", c["c1"], ["tv", "cable"])
    _order(session, ws, "o7", c["c2"], ["tv", "cable"])
    _order(session, ws, "o8", c["c6"], ["headphones", "speaker"])
    _order(session, ws, "o9", c["c3"], ["headphones", "speaker"])
    _order(session, ws, "o10", c["c4"], ["headphones"])
    _order(session, ws, "o11", c["target"], ["headphones"], days_ago=20)
    _order(session, ws, "o12", c["target"], ["phone"], days_ago=1)
    cancelled = _order(session, ws, "o13", c["c5"], ["tv", "case"])
    commerce.cancel_order(session, ws, cancelled)
    session.flush()
    return {"products": ids, "contacts": c}


def test_product_rules_have_the_hand_computed_measures(session, workspace) -> None:
    shop = _shop(session, workspace.id)
    p = shop["products"]
    result = service.recompute(session, workspace.id, NOW)
    assert result["orders"] == 12 and result["lines"] == 24
    assert result["customers"] == 7

    recs = service.for_product(session, workspace.id, p["phone"], limit=10)
    together = [r for r in recs if r["kind"] == "together"]
    # phone in 6 orders, case in 4, both in 4, N = 12: support 1/3, confidence 2/3, lift 2.
    assert [r["sku"] for r in together] == ["case", "charger"]  # the gadget is inactive
    case = together[0]
    assert case["support"] == pytest.approx(4 / 12)
    assert case["confidence"] == pytest.approx(4 / 6)
    assert case["lift"] == pytest.approx(2.0)
    assert case["orders_together"] == 4
    assert case["reason"] == "bought_together"
    assert together[1]["confidence"] == pytest.approx(2 / 6)
    # Then products bought by the same customers (cosine over customers), each product only once.
    similar = [r for r in recs if r["kind"] == "similar"]
    assert {r["sku"] for r in similar} == {"tv", "cable", "headphones"}
    headphones = next(r for r in similar if r["sku"] == "headphones")
    assert headphones["score"] == pytest.approx(3 / (6 * 4) ** 0.5)  # c3, c4 and target bought both
    assert headphones["customers_in_common"] == 3
    assert len({r["sku"] for r in recs}) == len(recs)
    assert all(r["sku"] not in ("phone", "gadget") for r in recs)

    back = service.for_product(session, workspace.id, p["case"], limit=1)
    assert back[0]["sku"] == "phone" and back[0]["confidence"] == pytest.approx(1.0)
    assert len(service.for_product(session, workspace.id, p["phone"], limit=2)) == 2


def test_contact_picks_follow_latest_order_then_similar_customers(session, workspace) -> None:
    shop = _shop(session, workspace.id)
    service.recompute(session, workspace.id, NOW)
    picks = service.for_contact(session, workspace.id, shop["contacts"]["target"])
    # Latest order: phone -> case (2/3), charger (1/3); then neighbours of headphones + phone: speaker (0.71),
    # tv (0.58, ties with cable, smaller id). Headphones and phone are owned, the gadget is inactive.
    assert [(r["sku"], r["reason"]) for r in picks] == [
        ("case", "bought_together"),
        ("charger", "bought_together"),
        ("speaker", "similar_customers"),
        ("tv", "similar_customers"),
    ]
    assert picks[0] == {
        "product_id": shop["products"]["case"],
        "name": "Phone case",
        "url": "https://shop.example.fi/p/case",
        "image_url": None,
        "price_minor": 1990,
        "currency": "EUR",
        "sku": "case",
        "category": "accessories",
        "reason": "bought_together",
    }
    more = service.for_contact(session, workspace.id, shop["contacts"]["target"], limit=20)
    skus = [r["sku"] for r in more]
    assert skus[:4] == ["case", "charger", "speaker", "tv"]
    assert "phone" not in skus and "headphones" not in skus and "gadget" not in skus
    assert set(skus) == {"case", "charger", "speaker", "tv", "cable"}


def test_contact_without_orders_gets_best_sellers(session, workspace) -> None:
    shop = _shop(session, workspace.id)
    service.recompute(session, workspace.id, NOW)
    picks = service.for_contact(session, workspace.id, shop["contacts"]["newcomer"])
    # phone 6 orders; case and headphones 4 (tie: smaller id); then charger 2 (the gadget, also 2, is inactive).
    assert [(r["sku"], r["reason"]) for r in picks] == [
        ("phone", "best_seller"),
        ("case", "best_seller"),
        ("headphones", "best_seller"),
        ("charger", "best_seller"),
    ]


def test_best_sellers_in_the_contacts_category_come_first(session, workspace) -> None:
    ws = workspace.id
    ids = _catalogue(session, ws)
    buyers = [_contact(session, ws, f"b{i}") for i in range(6)]
    q = _contact(session, ws, "quiet")
    for i in range(3):
        _order(session, ws, f"s{i}", buyers[i], ["speaker"])
    for i in range(2):
        _order(session, ws, f"p{i}", buyers[3 + i], ["phone"])
    _order(session, ws, "t0", buyers[5], ["tv"])
    _order(session, ws, "q0", q, ["cable"])
    session.flush()
    service.recompute(session, ws, NOW)
    picks = service.for_contact(session, ws, q)
    assert [(r["sku"], r["reason"]) for r in picks] == [
        ("tv", "best_seller_in_category"),  # q bought a video product
        ("speaker", "best_seller"),
        ("phone", "best_seller"),
    ]
    # Making a product inactive drops it at once, without recomputing.
    commerce.update_product(session, ws, ids["speaker"], ProductUpdate(properties={"status": "archived"}))
    session.flush()
    assert [r["sku"] for r in service.for_contact(session, ws, q)] == ["tv", "phone"]


def test_lines_ordered_before_the_product_existed_match_by_sku(session, workspace) -> None:
    ws = workspace.id
    a, b = _contact(session, ws, "a"), _contact(session, ws, "b")
    _order(session, ws, "old1", a, ["late-1", "late-2"])
    _order(session, ws, "old2", b, ["late-1", "late-2"])
    for sku in ("late-1", "late-2"):
        commerce.create_product(session, ws, ProductCreate(sku=sku, name=sku, price_minor=100, currency="EUR"))
    session.flush()
    result = service.recompute(session, ws, NOW)
    assert result["lines"] == 4 and result["together_rules"] == 2 and result["similar_pairs"] == 2
    c = _contact(session, ws, "c")
    _order(session, ws, "new", c, ["late-1"])
    session.flush()
    service.recompute(session, ws, NOW)
    assert [(r["sku"], r["reason"]) for r in service.for_contact(session, ws, c)] == [("late-2", "bought_together")]


def test_recompute_replaces_everything_and_stays_in_its_workspace(session, workspace, other_workspace) -> None:
    shop = _shop(session, workspace.id)
    other = _shop(session, other_workspace.id)
    first = service.recompute(session, workspace.id, NOW)
    second = service.recompute(session, workspace.id, NOW + timedelta(hours=1))
    assert first["together_rules"] == second["together_rules"] > 0

    def count(ws: int) -> int:
        return session.scalar(select(func.count()).where(RecommendationRule.workspace_id == ws))

    assert count(workspace.id) == second["together_rules"] + second["similar_pairs"]
    assert count(other_workspace.id) == 0
    assert service.for_product(session, other_workspace.id, other["products"]["phone"]) == []
    with pytest.raises(NotFound):
        service.for_product(session, other_workspace.id, shop["products"]["phone"])
    with pytest.raises(NotFound):
        service.for_contact(session, other_workspace.id, shop["contacts"]["target"])
    # A deleted product disappears from the stored rules with it.
    commerce.delete_product(session, workspace.id, shop["products"]["case"])
    session.flush()
    recs = service.for_product(session, workspace.id, shop["products"]["phone"])
    assert "case" not in {r["sku"] for r in recs}


def test_the_cross_sell_template_renders_the_picks(session, workspace) -> None:
    shop = _shop(session, workspace.id)
    service.recompute(session, workspace.id, NOW)
    target = shop["contacts"]["target"]
    picks = service.for_contact(session, workspace.id, target, limit=2)
    rendered = messaging.render_for_contact(
        session,
        workspace.id,
        "cross_sell",
        target,
        extra={
            "order": {"lines": [{"name": "Phone X"}], "currency": "EUR"},
            "recommendations": picks,
            "unsubscribe_url": "https://mail.example.fi/u/t1",
            "preferences_url": "https://mail.example.fi/p/t1",
        },
        language="en",
    )
    assert "Customers who bought Phone X also bought" in rendered.subject
    assert "Phone case (https://shop.example.fi/p/case)" in rendered.text
    assert "€19.90" in rendered.text and "€29.90" in rendered.text


def test_the_job_recomputes_when_due(session_factory, workspace) -> None:
    from suppilo.adapters.worker.jobs import JOBS

    assert ("recommendations", 3600.0, run_recommendations) in JOBS
    ws = workspace.id
    with session_factory() as s:
        shop = _shop(s, ws)
        s.commit()
    totals = run_recommendations(session_factory, now=NOW)
    assert totals["recomputed"] >= 1
    with session_factory() as s:
        run = s.scalar(select(RecommendationRun).where(RecommendationRun.workspace_id == ws))
        assert run is not None and run.computed_at == NOW
        assert not service.needs_recompute(s, ws, NOW + timedelta(hours=1))
        assert service.needs_recompute(s, ws, NOW + timedelta(hours=24))
    # Nothing changed an hour later: this workspace is skipped.
    run_recommendations(session_factory, now=NOW + timedelta(hours=1))
    with session_factory() as s:
        assert s.scalar(select(RecommendationRun.computed_at).where(RecommendationRun.workspace_id == ws)) == NOW
        _order(s, ws, "o14", shop["contacts"]["newcomer"], ["tv"])
        s.commit()
    # A new order makes it due again.
    later = NOW + timedelta(hours=2)
    run_recommendations(session_factory, now=later)
    with session_factory() as s:
        run = s.scalar(select(RecommendationRun).where(RecommendationRun.workspace_id == ws))
        assert run.computed_at == later and run.order_count == 14


def test_a_workspace_without_orders_recomputes_to_nothing(session, workspace) -> None:
    quiet = _contact(session, workspace.id, "quiet")
    _catalogue(session, workspace.id)
    result = service.recompute(session, workspace.id, NOW)
    assert (result["lines"], result["orders"], result["together_rules"], result["best_sellers"]) == (0, 0, 0, 0)
    assert service.for_contact(session, workspace.id, quiet) == []
    assert not service.needs_recompute(session, workspace.id, NOW)
