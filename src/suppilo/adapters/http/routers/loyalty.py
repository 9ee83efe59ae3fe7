"""HTTP routes: loyalty — the programme, a contact's balance and ledger, bonus awards, redemptions, tiers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession, Writer
from suppilo.loyalty import service
from suppilo.loyalty.schemas import (
    AwardIn,
    BalanceRead,
    EntryPage,
    EntryRead,
    ExpiryResult,
    ProgramIn,
    ProgramRead,
    RedeemPointsIn,
    RedeemPointsOut,
    TierStat,
)
from suppilo.offers import service as offers_service

router = APIRouter(prefix="/api/v1/loyalty", tags=["loyalty"])

Limit = Annotated[int, Query(ge=1, le=500)]


@router.get("/program", response_model=ProgramRead)
def read_program(principal: Reader, session: ReadSession) -> ProgramRead:
    """The programme (disabled defaults until one is saved)."""
    return ProgramRead.model_validate(service.get_program(session, principal.workspace_id))


@router.put("/program", response_model=ProgramRead)
def put_program(data: ProgramIn, principal: Admin, session: DbSession) -> ProgramRead:
    """Save the programme: earning rate, expiry, tier basis and window, tiers, bonus events, rewards."""
    return ProgramRead.model_validate(service.put_program(session, principal.workspace_id, data))


@router.get("/tiers", response_model=list[TierStat])
def tiers(principal: Reader, session: ReadSession) -> list[TierStat]:
    """The tiers with the number of contacts in each."""
    return [TierStat.model_validate(t) for t in service.tier_stats(session, principal.workspace_id)]


@router.post("/run", response_model=ExpiryResult)
def run_now(principal: Admin, session: DbSession) -> ExpiryResult:
    """Run the periodic loyalty work now: expire due points, re-evaluate every tier."""
    return ExpiryResult.model_validate(service.run_for_workspace(session, principal.workspace_id))


@router.get("/contacts/{contact_id}", response_model=BalanceRead)
def read_balance(contact_id: int, principal: Reader, session: ReadSession) -> BalanceRead:
    """A contact's points, tier, perks, the way to the next tier and the points expiring within 30 days."""
    return BalanceRead.model_validate(service.balance(session, principal.workspace_id, contact_id))


@router.get("/contacts/{contact_id}/ledger", response_model=EntryPage)
def read_ledger(
    contact_id: int, principal: Reader, session: ReadSession, cursor: str | None = None, limit: Limit = 50
) -> EntryPage:
    """A contact's ledger entries, newest first."""
    items, next_cursor = service.ledger(session, principal.workspace_id, contact_id, cursor=cursor, limit=limit)
    return EntryPage(items=[EntryRead.model_validate(e) for e in items], next_cursor=next_cursor)


@router.post("/contacts/{contact_id}/award", response_model=EntryRead)
def award(contact_id: int, data: AwardIn, principal: Writer, session: DbSession) -> EntryRead:
    """Bonus points for a configured event (review, referral, ...) or an explicit number; idempotent on the key."""
    entry = service.award_points(
        session,
        principal.workspace_id,
        contact_id,
        idempotency_key=data.idempotency_key,
        points=data.points,
        event=data.event,
        reason=data.reason,
    )
    return EntryRead.model_validate(entry)


@router.post("/contacts/{contact_id}/redeem", response_model=RedeemPointsOut)
def redeem(contact_id: int, data: RedeemPointsIn, principal: Writer, session: DbSession) -> RedeemPointsOut:
    """Spend points on a reward, on a coupon of an offer, or plainly; 422 ``insufficient_points`` when short."""
    entry, coupon = service.redeem_points(
        session,
        principal.workspace_id,
        contact_id,
        idempotency_key=data.idempotency_key,
        points=data.points,
        reward=data.reward,
        offer_key=data.offer_key,
        reason=data.reason,
    )
    coupon_read = offers_service.coupon_reads(session, principal.workspace_id, [coupon])[0] if coupon else None
    return RedeemPointsOut(entry=EntryRead.model_validate(entry), coupon=coupon_read)
