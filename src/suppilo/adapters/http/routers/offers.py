"""HTTP routes: offers and coupons — definitions, issuing (one or in bulk), listing, redemption, voiding."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer
from suppilo.errors import NotFound
from suppilo.offers import service
from suppilo.offers.schemas import (
    CouponBulk,
    CouponBulkResult,
    CouponIssue,
    CouponPage,
    CouponRead,
    CouponStatus,
    OfferCreate,
    OfferRead,
    OfferUpdate,
    RedeemIn,
    RedemptionRead,
)

router = APIRouter(prefix="/api/v1", tags=["offers"])

Limit = Annotated[int, Query(ge=1, le=500)]


@router.post("/offers", response_model=OfferRead, status_code=http.HTTP_201_CREATED)
def create_offer(data: OfferCreate, principal: Writer, session: DbSession) -> OfferRead:
    """Define an offer; its key is unique in the workspace (409 otherwise)."""
    return OfferRead.model_validate(service.create_offer(session, principal.workspace_id, data))


@router.get("/offers", response_model=list[OfferRead])
def list_offers(principal: Reader, session: ReadSession, active: bool | None = None) -> list[OfferRead]:
    """Every offer, by key."""
    return [OfferRead.model_validate(o) for o in service.list_offers(session, principal.workspace_id, active=active)]


@router.get("/offers/{key}", response_model=OfferRead)
def read_offer(key: str, principal: Reader, session: ReadSession) -> OfferRead:
    """One offer."""
    return OfferRead.model_validate(service.get_offer(session, principal.workspace_id, key, path="key"))


@router.patch("/offers/{key}", response_model=OfferRead)
def update_offer(key: str, data: OfferUpdate, principal: Writer, session: DbSession) -> OfferRead:
    """Change an offer; coupons already issued keep their value."""
    return OfferRead.model_validate(service.update_offer(session, principal.workspace_id, key, data))


@router.delete("/offers/{key}", status_code=http.HTTP_204_NO_CONTENT)
def delete_offer(key: str, principal: Writer, session: DbSession) -> Response:
    """Remove an offer that never issued a coupon (409 otherwise: deactivate it instead)."""
    service.delete_offer(session, principal.workspace_id, key)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.post("/offers/{key}/coupons", response_model=CouponRead, status_code=http.HTTP_201_CREATED)
def issue_coupon(key: str, data: CouponIssue, principal: Writer, session: DbSession) -> CouponRead:
    """Issue one coupon (for a contact, or for anyone); the same idempotency key returns the same coupon."""
    coupon = service.issue_coupon(
        session,
        principal.workspace_id,
        offer_key=key,
        contact_id=data.contact_id,
        idempotency_key=data.idempotency_key,
    )
    return service.coupon_reads(session, principal.workspace_id, [coupon])[0]


@router.post("/offers/{key}/coupons/bulk", response_model=CouponBulkResult, status_code=http.HTTP_201_CREATED)
def generate_coupons(key: str, data: CouponBulk, principal: Writer, session: DbSession) -> CouponBulkResult:
    """Generate ``count`` codes for anyone under a batch label; list them with ``GET /coupons?batch=``."""
    batch, count = service.generate_codes(
        session, principal.workspace_id, offer_key=key, count=data.count, batch=data.batch
    )
    return CouponBulkResult(offer_key=key, batch=batch, count=count)


@router.get("/coupons", response_model=CouponPage)
def list_coupons(
    principal: Reader,
    session: ReadSession,
    offer_key: str | None = None,
    contact_id: int | None = None,
    status: CouponStatus | None = None,
    batch: str | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> CouponPage:
    """Coupons, newest first."""
    items, next_cursor = service.list_coupons(
        session,
        principal.workspace_id,
        offer_key=offer_key,
        contact_id=contact_id,
        status=status,
        batch=batch,
        cursor=cursor,
        limit=limit,
    )
    return CouponPage(items=service.coupon_reads(session, principal.workspace_id, items), next_cursor=next_cursor)


@router.post("/coupons/redeem", response_model=RedemptionRead, status_code=http.HTTP_201_CREATED)
def redeem_coupon(data: RedeemIn, principal: Writer, session: DbSession) -> RedemptionRead:
    """Redeem a code once. Refusals answer 422 with the reason as ``error.code`` (coupon_used, coupon_expired,
    coupon_foreign, coupon_unknown, bad_checksum, minimum_not_met, limit_reached, ...) and ``error.path`` "code"."""
    redemption = service.redeem(
        session,
        principal.workspace_id,
        data.code,
        contact_id=data.contact_id,
        order_id=data.order_id,
        order_total_minor=data.order_total_minor,
        currency=data.currency,
    )
    return service.redemption_read(session, principal.workspace_id, redemption)


@router.get("/coupons/{code}", response_model=CouponRead)
def read_coupon(code: str, principal: Reader, session: ReadSession) -> CouponRead:
    """One coupon by code (dashes and case do not matter)."""
    coupon = service.get_coupon(session, principal.workspace_id, code)
    return service.coupon_reads(session, principal.workspace_id, [coupon])[0]


@router.get("/coupons/{code}/redemption", response_model=RedemptionRead)
def read_redemption(code: str, principal: Reader, session: ReadSession) -> RedemptionRead:
    """The redemption of a coupon (404 while it is unused)."""
    coupon = service.get_coupon(session, principal.workspace_id, code)
    redemption = service.redemption_of_coupon(session, principal.workspace_id, coupon.id)
    if redemption is None:
        raise NotFound("code", "this coupon has not been redeemed")
    return service.redemption_read(session, principal.workspace_id, redemption)


@router.post("/coupons/{code}/void", response_model=CouponRead)
def void_coupon(code: str, principal: Writer, session: DbSession) -> CouponRead:
    """Withdraw an unused coupon."""
    coupon = service.void_coupon(session, principal.workspace_id, code)
    return service.coupon_reads(session, principal.workspace_id, [coupon])[0]
