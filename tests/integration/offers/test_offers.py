"""Offers: definitions with clear field-path errors, value rules by lifetime value / CLV tier, idempotent issuing,
bulk codes, redemption refusals, and coupons carried by orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from suppilo.analytics.models import ExchangeRate
from suppilo.commerce import service as commerce
from suppilo.commerce.models import Order
from suppilo.commerce.schemas import OrderCreate, ProductCreate
from suppilo.contacts.models import Contact
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.events.models import Event
from suppilo.offers import codes
from suppilo.offers import service as offers
from suppilo.offers.models import Coupon, Redemption
from suppilo.offers.schemas import OfferCreate, OfferUpdate

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
LTV_RULE = {
    "by": "ltv",
    "tiers": [{"min": 0, "percent": 10}, {"min": 50000, "percent": 15}, {"min": 200000, "percent": 20}],
}


def _contact(session, ws: int, email: str, **props) -> int:
    c = Contact(workspace_id=ws, email=email, lifecycle_stage="customer", properties=props)
    session.add(c)
    session.flush()
    return c.id


def _offer(session, ws: int, key: str = "winback", **fields) -> None:
    data = {"key": key, "name": "Win back", "kind": "percent", "percent": 10, **fields}
    offers.create_offer(session, ws, OfferCreate(**data))


def _paid_order(session, ws: int, contact_id: int, ext: str, total: int, currency: str = "EUR", refunded: int = 0):
    session.add(
        Order(
            workspace_id=ws,
            external_id=ext,
            contact_id=contact_id,
            placed_at=NOW - timedelta(days=30),
            currency=currency,
            total_minor=total,
            refunded_minor=refunded,
            status="partially_refunded" if refunded else "completed",
        )
    )
    session.flush()


def _refusal(fn, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(DomainError) as err:
        fn(*args, **kwargs)
    return err.value.field, err.value.code


def test_definitions_are_validated_with_field_paths(session, workspace) -> None:
    ws = workspace.id
    assert _refusal(_offer, session, ws, kind="fixed", percent=None, amount_minor=500) == ("currency", "missing_value")
    assert _refusal(_offer, session, ws, kind="free_product", percent=None, product_sku="NOPE") == (
        "product_sku",
        "unknown_product",
    )
    bad_rules = [
        ({"by": "rfm"}, "value_rule.by"),
        ({"by": "ltv", "tiers": []}, "value_rule.tiers"),
        ({"by": "ltv", "tiers": [{"min": 0, "percent": 10}, {"min": 0, "percent": 15}]}, "value_rule.tiers[1].min"),
        ({"by": "ltv", "tiers": [{"min": 0, "percent": 120}]}, "value_rule.tiers[0].percent"),
        ({"by": "ltv", "tiers": [{"min": 0, "amount_minor": 500}]}, "value_rule.tiers[0].amount_minor"),
        ({"by": "clv_tier", "groups": {"Z": {"percent": 5}}}, "value_rule.groups.Z"),
    ]
    for rule, path in bad_rules:
        assert _refusal(_offer, session, ws, value_rule=rule)[0] == path
    _offer(session, ws, valid_from=NOW, valid_until=NOW + timedelta(days=30), min_order_minor=2000)
    offer = offers.get_offer(session, ws, "winback")
    assert offer.min_order_currency == "EUR"  # the workspace currency by default
    with pytest.raises(Conflict):
        _offer(session, ws)
    assert _refusal(offers.update_offer, session, ws, "winback", OfferUpdate(valid_until=NOW - timedelta(days=1)))[
        0
    ] == ("valid_until")


def test_issue_is_idempotent_and_the_value_follows_lifetime_value(session, workspace) -> None:
    ws = workspace.id
    _offer(session, ws, value_rule=LTV_RULE, valid_days=14)
    small, mid, big, other_ccy = (_contact(session, ws, f"{n}@example.fi") for n in ("s", "m", "b", "x"))
    _paid_order(session, ws, mid, "m1", 40000)
    _paid_order(session, ws, mid, "m2", 20000, refunded=5000)  # net 55000 → 15 %
    _paid_order(session, ws, big, "b1", 300000)
    _paid_order(session, ws, other_ccy, "x1", 10000)
    _paid_order(session, ws, other_ccy, "x2", 500000, currency="SEK")  # 500000 öre * 0.09 = 45000 cents → 55000
    session.add(
        ExchangeRate(workspace_id=ws, rate_date=NOW.date() - timedelta(days=400), base="SEK", quote="EUR", rate=0.09)
    )
    session.flush()
    assert offers.contact_lifetime_value(session, ws, other_ccy) == 55000

    got = {
        cid: offers.issue_coupon(session, ws, offer_key="winback", contact_id=cid, idempotency_key=f"j:{cid}", now=NOW)
        for cid in (small, mid, big, other_ccy)
    }
    assert {cid: c.percent for cid, c in got.items()} == {small: 10, mid: 15, big: 20, other_ccy: 15}
    again = offers.issue_coupon(session, ws, offer_key="winback", contact_id=mid, idempotency_key=f"j:{mid}", now=NOW)
    assert again.id == got[mid].id and again.code == got[mid].code
    assert got[mid].expires_at == NOW + timedelta(days=14) and codes.is_valid(got[mid].code)
    assert _refusal(
        offers.issue_coupon, session, ws, offer_key="winback", contact_id=big, idempotency_key=f"j:{mid}"
    ) == (
        "idempotency_key",
        "key_reused",
    )
    with pytest.raises(NotFound):
        offers.issue_coupon(session, ws, offer_key="nope", contact_id=mid, idempotency_key="k")
    # A coupon without a contact gets the base value.
    assert offers.issue_coupon(session, ws, offer_key="winback", contact_id=None, idempotency_key="anon").percent == 10


def test_clv_tier_rule_and_offer_end_bounds_expiry(session, workspace) -> None:
    ws = workspace.id
    rule = {"by": "clv_tier", "groups": {"A": {"amount_minor": 2000}}, "default": {"amount_minor": 500}}
    _offer(
        session,
        ws,
        kind="fixed",
        percent=None,
        amount_minor=300,
        currency="EUR",
        value_rule=rule,
        valid_until=NOW + timedelta(days=3),
        valid_days=30,
    )
    a = _contact(session, ws, "a@example.fi", clv_tier="A")
    c = _contact(session, ws, "c@example.fi", clv_tier="C")
    ca = offers.issue_coupon(session, ws, offer_key="winback", contact_id=a, idempotency_key="a", now=NOW)
    cc = offers.issue_coupon(session, ws, offer_key="winback", contact_id=c, idempotency_key="c", now=NOW)
    assert (ca.amount_minor, cc.amount_minor, ca.currency) == (2000, 500, "EUR")
    assert ca.expires_at == NOW + timedelta(days=3)
    assert _refusal(
        offers.issue_coupon,
        session,
        ws,
        offer_key="winback",
        contact_id=a,
        idempotency_key="late",
        now=NOW + timedelta(days=4),
    ) == ("offer_key", "offer_expired")


def test_redemption_refusals_carry_the_reason(session, workspace, other_workspace) -> None:
    ws = workspace.id
    _offer(session, ws, valid_days=10, min_order_minor=5000, per_customer_limit=1)
    me, you = _contact(session, ws, "me@example.fi"), _contact(session, ws, "you@example.fi")
    mine = offers.issue_coupon(session, ws, offer_key="winback", contact_id=me, idempotency_key="1", now=NOW)
    later = NOW + timedelta(days=1)

    def refused(code: str, **kw) -> str:
        kw.setdefault("contact_id", me)
        kw.setdefault("now", later)
        field, reason = _refusal(offers.redeem, session, ws, code, **kw)
        assert field == "code"
        return reason

    i = next(i for i in range(len(mine.code) - 1) if mine.code[i] != mine.code[i + 1])
    typo = mine.code[:i] + mine.code[i + 1] + mine.code[i] + mine.code[i + 2 :]
    assert refused(typo, order_total_minor=6000, currency="EUR") == "bad_checksum"
    assert refused(codes.new_code(), order_total_minor=6000, currency="EUR") == "coupon_unknown"
    assert refused(mine.code, contact_id=you, order_total_minor=6000, currency="EUR") == "coupon_foreign"
    assert refused(mine.code, order_total_minor=4999, currency="EUR") == "minimum_not_met"
    assert refused(mine.code) == "minimum_not_met"
    assert refused(mine.code, order_total_minor=6000, currency="EUR", now=NOW + timedelta(days=11)) == "coupon_expired"
    # another workspace does not know the code
    _field, reason = _refusal(offers.redeem, session, other_workspace.id, mine.code, contact_id=None)
    assert reason == "coupon_unknown"

    display = codes.display(mine.code).lower()
    redemption = offers.redeem(session, ws, display, contact_id=me, order_total_minor=6000, currency="EUR", now=later)
    assert (redemption.discount_minor, redemption.currency) == (600, "EUR")
    assert refused(mine.code, order_total_minor=6000, currency="EUR") == "coupon_used"
    second = offers.issue_coupon(session, ws, offer_key="winback", contact_id=me, idempotency_key="2", now=NOW)
    assert refused(second.code, order_total_minor=6000, currency="EUR") == "limit_reached"
    third = offers.issue_coupon(session, ws, offer_key="winback", contact_id=None, idempotency_key="3", now=NOW)
    offers.void_coupon(session, ws, third.code)
    assert refused(third.code, order_total_minor=6000, currency="EUR") == "coupon_void"
    events = session.scalars(select(Event.name).where(Event.workspace_id == ws, Event.contact_id == me)).all()
    assert "Coupon Redeemed" in events


def test_fixed_discount_is_capped_and_converted(session, workspace) -> None:
    ws = workspace.id
    _offer(session, ws, kind="fixed", percent=None, amount_minor=1000, currency="EUR")
    session.add(ExchangeRate(workspace_id=ws, rate_date=NOW.date(), base="EUR", quote="SEK", rate=11))
    session.flush()
    c1 = offers.issue_coupon(session, ws, offer_key="winback", contact_id=None, idempotency_key="1", now=NOW)
    c2 = offers.issue_coupon(session, ws, offer_key="winback", contact_id=None, idempotency_key="2", now=NOW)
    c3 = offers.issue_coupon(session, ws, offer_key="winback", contact_id=None, idempotency_key="3", now=NOW)
    assert (
        offers.redeem(
            session, ws, c1.code, contact_id=None, order_total_minor=700, currency="EUR", now=NOW
        ).discount_minor
        == 700
    )
    assert (
        offers.redeem(
            session, ws, c2.code, contact_id=None, order_total_minor=50000, currency="SEK", now=NOW
        ).discount_minor
        == 11000
    )
    r3 = offers.redeem(session, ws, c3.code, contact_id=None, now=NOW)
    assert (r3.discount_minor, r3.currency, r3.order_total_minor) == (1000, "EUR", None)


def test_bulk_codes_are_unique_valid_and_counted(session, workspace) -> None:
    ws = workspace.id
    _offer(session, ws, valid_until=NOW + timedelta(days=60))
    seen: list[int] = []
    batch, n = offers.generate_codes(session, ws, offer_key="winback", count=12_345, now=NOW, progress=seen.append)
    assert n == 12_345 and seen[-1] == 12_345 and len(seen) == 3
    rows = session.execute(select(Coupon.code, Coupon.percent, Coupon.contact_id).where(Coupon.batch == batch)).all()
    assert len(rows) == 12_345 and len({r.code for r in rows}) == 12_345
    assert all(codes.is_valid(r.code) and r.percent == 10 and r.contact_id is None for r in rows[:500])
    page, cursor = offers.list_coupons(session, ws, batch=batch, limit=100)
    assert len(page) == 100 and cursor is not None
    page2, _ = offers.list_coupons(session, ws, batch=batch, limit=100, cursor=cursor)
    assert {c.id for c in page}.isdisjoint({c.id for c in page2})
    # anyone may redeem a bulk code, once
    someone = _contact(session, ws, "s@example.fi")
    offers.redeem(session, ws, rows[0].code, contact_id=someone, now=NOW)
    with pytest.raises(DomainError):
        offers.redeem(session, ws, rows[0].code, contact_id=None, now=NOW)


def test_an_order_with_a_coupon_redeems_it_and_a_bad_code_never_rejects_the_order(session, workspace) -> None:
    ws = workspace.id
    mug = commerce.create_product(session, ws, ProductCreate(sku="MUG", name="Mug", price_minor=2500, currency="EUR"))
    _offer(session, ws, key="mug-by-id", kind="free_product", percent=None, product_id=mug.id)
    assert offers.get_offer(session, ws, "mug-by-id").product_sku == "MUG"
    assert _refusal(_offer, session, ws, kind="free_product", percent=None, product_id=10**9) == (
        "product_id",
        "unknown_product",
    )
    _offer(session, ws, kind="free_product", percent=None, product_sku="MUG")
    buyer = _contact(session, ws, "buyer@example.fi")
    coupon = offers.issue_coupon(session, ws, offer_key="winback", contact_id=buyer, idempotency_key="o", now=NOW)
    assert coupon.product_sku == "MUG"

    def order(ext: str, code: str | None) -> Order:
        data = OrderCreate(
            external_id=ext,
            contact_id=buyer,
            placed_at=NOW + timedelta(hours=1),
            currency="EUR",
            total_minor=4000,
            coupon_code=code,
        )
        return commerce.upsert_order(session, ws, data)[0]

    first = order("A-1", codes.display(coupon.code))
    red = session.scalar(select(Redemption).where(Redemption.order_id == first.id))
    assert red is not None and red.coupon_id == coupon.id
    assert red.discount_minor == 2500  # the free mug's price
    commerce.upsert_order(
        session,
        ws,
        OrderCreate(
            external_id="A-1",
            contact_id=buyer,
            placed_at=first.placed_at,
            currency="EUR",
            total_minor=4000,
            coupon_code=coupon.code,
        ),
    )
    assert session.scalar(select(func.count()).select_from(Redemption).where(Redemption.workspace_id == ws)) == 1
    second = order("A-2", coupon.code)  # already used
    third = order("A-3", "SUMMER10")  # a shop's own code
    assert second.id and third.id
    refused = (
        session.execute(select(Event.properties).where(Event.workspace_id == ws, Event.name == "Coupon Refused"))
        .scalars()
        .all()
    )
    assert sorted(p["reason"] for p in refused) == ["bad_checksum", "coupon_used"]
    # Segment 'Order Completed' with a coupon property
    other = offers.issue_coupon(session, ws, offer_key="winback", contact_id=buyer, idempotency_key="seg", now=NOW)
    commerce.apply_ecommerce_event(
        session,
        ws,
        buyer,
        "Order Completed",
        {"order_id": "S-1", "total": 40, "currency": "EUR", "coupon": other.code.lower()},
        NOW + timedelta(hours=2),
        "m-1",
    )
    assert session.scalar(select(Coupon.status).where(Coupon.id == other.id)) == "redeemed"


def test_bulk_generation_draws_again_when_a_code_is_taken(session, workspace, monkeypatch) -> None:
    ws = workspace.id
    _offer(session, ws)
    _batch, _n = offers.generate_codes(session, ws, offer_key="winback", count=3, now=NOW)
    taken = list(session.scalars(select(Coupon.code).where(Coupon.workspace_id == ws)))
    real = codes.new_codes
    draws: list[int] = []

    def colliding(count: int, length: int = codes.PAYLOAD_LENGTH) -> list[str]:
        draws.append(count)
        # the first draw repeats the three stored codes; later draws are random
        return taken + real(count - 3) if len(draws) == 1 else real(count)

    monkeypatch.setattr(codes, "new_codes", colliding)
    batch, n = offers.generate_codes(session, ws, offer_key="winback", count=10, now=NOW)
    assert n == 10 and draws == [10, 3]
    fresh = set(session.scalars(select(Coupon.code).where(Coupon.batch == batch)))
    assert len(fresh) == 10 and not fresh & set(taken)


def test_rfm_group_rule_gives_champions_the_bigger_coupon(session, workspace) -> None:
    ws = workspace.id
    rule = {
        "by": "rfm_group",
        "groups": {"champions": {"percent": 5}, "at_risk": {"percent": 25}},
        "default": {"percent": 10},
    }
    _offer(session, ws, value_rule=rule)
    ids = {g: _contact(session, ws, f"{g}@example.fi", rfm_group=g) for g in ("champions", "at_risk", "lost")}
    got = {
        g: offers.issue_coupon(session, ws, offer_key="winback", contact_id=cid, idempotency_key=g, now=NOW).percent
        for g, cid in ids.items()
    }
    assert got == {"champions": 5, "at_risk": 25, "lost": 10}
    with pytest.raises(DomainError) as err:
        offers.validate_value_rule({"by": "rfm_group", "groups": {"vip": {"percent": 5}}}, "percent")
    assert err.value.field == "value_rule.groups.vip"
