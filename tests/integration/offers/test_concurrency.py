"""Many simultaneous redemptions of one coupon: exactly one wins, every other is refused as used."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from suppilo.errors import DomainError
from suppilo.offers import service as offers
from suppilo.offers.models import Coupon, Redemption
from suppilo.offers.schemas import OfferCreate

THREADS = 60


def _race(session_factory, fn, n: int = THREADS) -> list[str]:
    start = threading.Barrier(n)

    def attempt(i: int) -> str:
        start.wait()
        with session_factory() as s:
            try:
                fn(s, i)
                s.commit()
                return "ok"
            except DomainError as exc:
                s.rollback()
                return exc.code

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(attempt, range(n)))


def test_one_coupon_redeemed_by_many_threads_at_once_is_redeemed_once(session_factory, workspace) -> None:
    ws = workspace.id
    with session_factory() as s:
        offers.create_offer(s, ws, OfferCreate(key="race", name="Race", kind="percent", percent=20))
        coupon = offers.issue_coupon(s, ws, offer_key="race", contact_id=None, idempotency_key="race")
        s.commit()
        code = coupon.code

    outcomes = _race(
        session_factory,
        lambda s, i: offers.redeem(s, ws, code, contact_id=None, order_total_minor=1000 + i, currency="EUR"),
    )
    assert outcomes.count("ok") == 1
    assert set(outcomes) == {"ok", "coupon_used"}
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Redemption).where(Redemption.workspace_id == ws)) == 1
        assert s.scalar(select(Coupon.status).where(Coupon.workspace_id == ws, Coupon.code == code)) == "redeemed"


def test_per_customer_limit_holds_when_one_customer_redeems_many_codes_at_once(session_factory, workspace) -> None:
    ws = workspace.id
    with session_factory() as s:
        offers.create_offer(
            s, ws, OfferCreate(key="once", name="Once", kind="percent", percent=5, per_customer_limit=2)
        )
        _batch, _n = offers.generate_codes(s, ws, offer_key="once", count=20)
        all_codes = list(s.scalars(select(Coupon.code).where(Coupon.workspace_id == ws)))
        from suppilo.contacts.models import Contact

        contact = Contact(workspace_id=ws, email="greedy@example.fi", lifecycle_stage="customer")
        s.add(contact)
        s.commit()
        contact_id = contact.id

    outcomes = _race(session_factory, lambda s, i: offers.redeem(s, ws, all_codes[i], contact_id=contact_id), n=20)
    assert outcomes.count("ok") == 2
    assert set(outcomes) == {"ok", "limit_reached"}
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Redemption).where(Redemption.workspace_id == ws)) == 2


def test_the_same_idempotency_key_issued_from_many_threads_gives_one_coupon(session_factory, workspace) -> None:
    ws = workspace.id
    with session_factory() as s:
        offers.create_offer(s, ws, OfferCreate(key="journey", name="Journey", kind="percent", percent=15))
        s.commit()
    ids: list[int] = []

    def issue(s, i: int) -> None:
        coupon = offers.issue_coupon(s, ws, offer_key="journey", contact_id=None, idempotency_key="journey:1:step-4")
        ids.append(coupon.id)

    outcomes = _race(session_factory, issue, n=30)
    assert outcomes == ["ok"] * 30
    assert len(set(ids)) == 1
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Coupon).where(Coupon.workspace_id == ws)) == 1
