"""Loyalty: earning per order, bonuses, redemption for rewards and coupons, expiry, refund reversal, tiers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from suppilo.commerce import service as commerce
from suppilo.commerce.schemas import OrderCreate, RefundCreate
from suppilo.contacts.models import Contact
from suppilo.errors import DomainError
from suppilo.events.models import Event
from suppilo.loyalty import service as loyalty
from suppilo.loyalty.models import LoyaltyBalance, LoyaltyEntry
from suppilo.loyalty.schemas import ProgramIn, RewardIn, TierIn
from suppilo.loyalty.tasks import run_loyalty
from suppilo.offers import service as offers
from suppilo.offers.schemas import OfferCreate

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _contact(session, ws: int, email: str = "member@example.fi") -> int:
    c = Contact(workspace_id=ws, email=email, lifecycle_stage="customer")
    session.add(c)
    session.flush()
    return c.id


def _program(session, ws: int, **fields) -> None:
    loyalty.put_program(session, ws, ProgramIn(**fields))


def _order(session, ws: int, contact_id: int, ext: str, total: int, *, at: datetime = NOW, currency: str = "EUR", **kw):
    data = OrderCreate(external_id=ext, contact_id=contact_id, placed_at=at, currency=currency, total_minor=total, **kw)
    return commerce.upsert_order(session, ws, data)[0]


def _sum_ledger(session, ws: int, contact_id: int) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(LoyaltyEntry.points), 0)).where(
                LoyaltyEntry.workspace_id == ws, LoyaltyEntry.contact_id == contact_id
            )
        )
    )


def _points(session, ws: int, contact_id: int) -> int:
    cached = loyalty.balance(session, ws, contact_id, now=NOW)["points"]
    assert cached == _sum_ledger(session, ws, contact_id)  # the cached balance is the ledger's sum
    return cached


def test_orders_earn_points_with_tier_multiplier_and_refunds_reverse_them(session, workspace) -> None:
    ws = workspace.id
    cid = _contact(session, ws)
    # No programme yet: orders earn nothing.
    _order(session, ws, cid, "before", 10000)
    assert _points(session, ws, cid) == 0
    _program(session, ws, points_per_unit=Decimal(2))
    order = _order(session, ws, cid, "o-1", 12345, tax_minor=0, shipping_minor=345)  # 120.00 EUR of goods
    assert _points(session, ws, cid) == 240
    _order(session, ws, cid, "o-1", 12345, tax_minor=0, shipping_minor=345)  # an update earns nothing more
    assert _points(session, ws, cid) == 240
    commerce.create_refund(session, ws, order.id, RefundCreate(external_id="r1", amount_minor=12345 // 5))
    assert _points(session, ws, cid) == 240 - 48
    commerce.create_refund(session, ws, order.id, RefundCreate(external_id="r2"))  # the rest
    assert _points(session, ws, cid) == 0
    kinds = session.scalars(select(LoyaltyEntry.kind).where(LoyaltyEntry.workspace_id == ws).order_by(LoyaltyEntry.id))
    assert list(kinds) == ["earn", "reverse", "reverse"]
    # A gold member earns 1.5×.
    loyalty.award_points(session, ws, cid, points=6000, idempotency_key="boost", now=NOW)
    assert loyalty.balance(session, ws, cid, now=NOW)["tier"] == "gold"
    _order(session, ws, cid, "o-2", 10000, at=NOW)
    assert _points(session, ws, cid) == 6000 + 300
    # Cancelling reverses what the order earned.
    o3 = _order(session, ws, cid, "o-3", 2000, at=NOW)
    commerce.cancel_order(session, ws, o3.id)
    assert _points(session, ws, cid) == 6300


def test_bonus_events_are_idempotent_and_unknown_ones_refused(session, workspace) -> None:
    ws = workspace.id
    cid = _contact(session, ws)
    _program(session, ws, bonus_events={"review": 50, "referral": 500})
    first = loyalty.award_points(session, ws, cid, event="review", idempotency_key="review:1", now=NOW)
    again = loyalty.award_points(session, ws, cid, event="review", idempotency_key="review:1", now=NOW)
    assert first.id == again.id and _points(session, ws, cid) == 50
    loyalty.award_points(session, ws, cid, event="referral", idempotency_key="ref:9", now=NOW)
    assert _points(session, ws, cid) == 550
    with pytest.raises(DomainError) as err:
        loyalty.award_points(session, ws, cid, event="birthday", idempotency_key="b", now=NOW)
    assert (err.value.field, err.value.code) == ("event", "unknown_event")
    with pytest.raises(DomainError) as err:
        loyalty.award_points(session, ws, 10**9, points=5, idempotency_key="x")
    assert err.value.field == "contact_id"


def test_redeeming_for_rewards_and_coupons_never_exceeds_the_balance(session, workspace) -> None:
    ws = workspace.id
    cid = _contact(session, ws)
    offers.create_offer(
        session, ws, OfferCreate(key="ten-off", name="10 €", kind="fixed", amount_minor=1000, currency="EUR")
    )
    _program(
        session,
        ws,
        rewards=[
            RewardIn(key="ten", name="10 € off", points=500, offer_key="ten-off"),
            RewardIn(key="bag", name="Tote bag", points=300),
        ],
    )
    loyalty.award_points(session, ws, cid, points=900, idempotency_key="seed", now=NOW)
    entry, coupon = loyalty.redeem_points(session, ws, cid, reward="ten", idempotency_key="r1", now=NOW)
    assert entry.points == -500 and coupon is not None and coupon.contact_id == cid and coupon.amount_minor == 1000
    same, same_coupon = loyalty.redeem_points(session, ws, cid, reward="ten", idempotency_key="r1", now=NOW)
    assert same.id == entry.id and same_coupon is not None and same_coupon.id == coupon.id
    assert _points(session, ws, cid) == 400
    with pytest.raises(DomainError) as err:
        loyalty.redeem_points(session, ws, cid, reward="ten", idempotency_key="r2", now=NOW)
    assert (err.value.field, err.value.code) == ("points", "insufficient_points")
    assert _points(session, ws, cid) == 400  # the refused redemption left nothing behind
    bag, _ = loyalty.redeem_points(session, ws, cid, reward="bag", idempotency_key="r3", now=NOW)
    retry, _ = loyalty.redeem_points(session, ws, cid, reward="bag", idempotency_key="r3", now=NOW)
    assert retry.id == bag.id and bag.points == -300 and _points(session, ws, cid) == 100
    plain, _ = loyalty.redeem_points(session, ws, cid, points=1, idempotency_key="p1", now=NOW)
    again, _ = loyalty.redeem_points(session, ws, cid, points=1, idempotency_key="p1", now=NOW)
    assert again.id == plain.id and _points(session, ws, cid) == 99
    other = _contact(session, ws, "other@example.fi")
    loyalty.award_points(session, ws, other, points=10, idempotency_key="o", now=NOW)
    with pytest.raises(DomainError) as err:
        loyalty.redeem_points(session, ws, other, points=1, idempotency_key="p1", now=NOW)
    assert err.value.code == "key_reused"
    assert _points(session, ws, other) == 10
    with pytest.raises(DomainError) as err:
        loyalty.redeem_points(session, ws, 10**9, points=1, idempotency_key="nobody", now=NOW)
    assert err.value.field == "contact_id"
    loyalty.award_points(session, ws, cid, points=1, idempotency_key="top-up", now=NOW)
    entry, coupon = loyalty.redeem_points(
        session, ws, cid, offer_key="ten-off", points=100, idempotency_key="r4", now=NOW
    )
    assert coupon is not None and _points(session, ws, cid) == 0
    with pytest.raises(DomainError):
        loyalty.redeem_points(session, ws, cid, reward="nope", idempotency_key="r5")


def test_points_expire_oldest_first_after_the_configured_days(session, workspace) -> None:
    ws = workspace.id
    cid = _contact(session, ws)
    _program(session, ws, expiry_days=30)
    loyalty.award_points(session, ws, cid, points=100, idempotency_key="a", now=NOW)
    loyalty.award_points(session, ws, cid, points=50, idempotency_key="b", now=NOW + timedelta(days=20))
    loyalty.redeem_points(session, ws, cid, points=80, idempotency_key="spend", now=NOW + timedelta(days=25))
    view = loyalty.balance(session, ws, cid, now=NOW + timedelta(days=25))
    assert (view["points"], view["expiring_points"], view["next_expiry_at"]) == (70, 70, NOW + timedelta(days=30))
    # At day 31 the first lot's remaining 20 points expire; the second lot (50) is still valid.
    assert loyalty.expire_points(session, ws, now=NOW + timedelta(days=31)) == (1, 20)
    assert loyalty.expire_points(session, ws, now=NOW + timedelta(days=31)) == (0, 0)
    assert _points(session, ws, cid) == 50
    assert loyalty.expire_points(session, ws, now=NOW + timedelta(days=51)) == (1, 50)
    assert _points(session, ws, cid) == 0


def test_tiers_change_with_events_and_drop_when_the_window_rolls(session_factory, workspace) -> None:
    ws = workspace.id
    with session_factory() as s:
        cid = _contact(s, ws)
        tiers = [
            TierIn(key="member", name="Member", min=0),
            TierIn(key="silver", name="Silver", min=100, perks=["free shipping"]),
        ]
        _program(s, ws, tiers=tiers, tier_window_days=30)
        loyalty.award_points(s, ws, cid, points=10, idempotency_key="1", now=NOW)
        loyalty.award_points(s, ws, cid, points=95, idempotency_key="2", now=NOW + timedelta(days=1))
        view = loyalty.balance(s, ws, cid, now=NOW + timedelta(days=1))
        assert (view["tier"], view["perks"], view["next_tier"]) == ("silver", ["free shipping"], None)
        s.commit()
    # 40 days later both awards left the window: the job moves the contact back down.
    totals = run_loyalty(session_factory, now=NOW + timedelta(days=40))
    assert totals["tier_changes"] == 1
    with session_factory() as s:
        changes = (
            s.execute(
                select(Event.properties)
                .where(Event.workspace_id == ws, Event.name == "loyalty.tier_changed")
                .order_by(Event.id)
            )
            .scalars()
            .all()
        )
        assert [(c["from"], c["to"], c["direction"]) for c in changes] == [
            (None, "member", "up"),
            ("member", "silver", "up"),
            ("silver", "member", "down"),
        ]
        assert s.scalar(select(LoyaltyBalance.tier).where(LoyaltyBalance.contact_id == cid)) == "member"
        assert {t["key"]: t["contacts"] for t in loyalty.tier_stats(s, ws)} == {"member": 1, "silver": 0}


def test_spend_basis_tiers_and_program_validation(session, workspace) -> None:
    ws = workspace.id
    cid = _contact(session, ws)
    tiers = [TierIn(key="member", name="Member", min=0), TierIn(key="vip", name="VIP", min=50000)]
    _program(session, ws, tier_basis="spend", tiers=tiers, points_per_unit=Decimal("0.1"))
    recent = datetime.now(UTC) - timedelta(days=3)
    _order(session, ws, cid, "s1", 30000, at=recent)
    assert loyalty.balance(session, ws, cid)["tier"] == "member"
    _order(session, ws, cid, "s2", 25000, at=recent)
    _order(session, ws, cid, "old", 99000, at=recent - timedelta(days=400))  # outside the 365-day window
    view = loyalty.balance(session, ws, cid)
    assert (view["tier"], view["tier_value"], view["points"]) == ("vip", 55000, 30 + 25 + 99)
    bad = [TierIn(key="a", name="A", min=5), TierIn(key="b", name="B", min=10)]
    with pytest.raises(DomainError) as err:
        _program(session, ws, tiers=bad)
    assert err.value.field == "tiers[0].min"
    with pytest.raises(DomainError) as err:
        _program(session, ws, tiers=[TierIn(key="a", name="A", min=0), TierIn(key="b", name="B", min=0)])
    assert err.value.field == "tiers[1].min"
    with pytest.raises(DomainError) as err:
        _program(session, ws, rewards=[RewardIn(key="x", name="X", points=5, offer_key="missing")])
    assert err.value.field == "rewards[0].offer_key"


def test_moving_a_merged_contact_keeps_points_and_coupons(session, workspace) -> None:
    ws = workspace.id
    keep, gone = _contact(session, ws, "keep@example.fi"), _contact(session, ws, "gone@example.fi")
    offers.create_offer(session, ws, OfferCreate(key="p", name="P", kind="percent", percent=5))
    coupon = offers.issue_coupon(session, ws, offer_key="p", contact_id=gone, idempotency_key="g", now=NOW)
    loyalty.award_points(session, ws, keep, points=30, idempotency_key="k", now=NOW)
    loyalty.award_points(session, ws, gone, points=1200, idempotency_key="g", now=NOW)
    loyalty.move_contact(session, ws, keep, gone, now=NOW)
    offers.move_contact(session, ws, keep, gone)
    view = loyalty.balance(session, ws, keep, now=NOW)
    assert (view["points"], view["tier"]) == (1230, "silver")
    assert _points(session, ws, keep) == 1230
    assert session.scalar(select(LoyaltyBalance).where(LoyaltyBalance.contact_id == gone)) is None
    session.refresh(coupon)
    assert coupon.contact_id == keep
