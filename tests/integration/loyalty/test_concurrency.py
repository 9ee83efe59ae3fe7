"""200 simultaneous redemptions of points: the balance never goes below zero, the ledger always equals it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from suppilo.contacts.models import Contact
from suppilo.errors import DomainError
from suppilo.loyalty import service as loyalty
from suppilo.loyalty.models import LoyaltyBalance, LoyaltyEntry

THREADS = 200


def test_concurrent_redemptions_never_overdraw(session_factory, workspace) -> None:
    ws = workspace.id
    with session_factory() as s:
        c = Contact(workspace_id=ws, email="race@example.fi", lifecycle_stage="customer")
        s.add(c)
        s.flush()
        cid = c.id
        loyalty.award_points(s, ws, cid, points=1000, idempotency_key="seed")
        s.commit()
    start = threading.Barrier(THREADS)

    def attempt(i: int) -> str:
        start.wait()
        with session_factory() as s:
            try:
                # 7 points each: 142 fit into 1000, the remaining 58 must be refused
                loyalty.redeem_points(s, ws, cid, points=7, idempotency_key=f"spend:{i}")
                s.commit()
                return "ok"
            except DomainError as exc:
                s.rollback()
                return exc.code

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        outcomes = list(pool.map(attempt, range(THREADS)))
    assert outcomes.count("ok") == 142
    assert set(outcomes) == {"ok", "insufficient_points"}
    with session_factory() as s:
        cached = s.scalar(select(LoyaltyBalance.points).where(LoyaltyBalance.workspace_id == ws))
        ledger = s.scalar(select(func.sum(LoyaltyEntry.points)).where(LoyaltyEntry.workspace_id == ws))
        assert cached == ledger == 1000 - 142 * 7
