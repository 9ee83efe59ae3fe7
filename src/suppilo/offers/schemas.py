"""Pydantic shapes of offers, coupons and redemptions. Money is integer minor units plus ISO 4217."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from suppilo.commerce.schemas import Currency, Text

OfferKind = Literal["percent", "fixed", "free_product"]
CouponStatus = Literal["issued", "redeemed", "void"]
OfferKey = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")]
MAX_BULK = 1_000_000


class OfferCreate(BaseModel):
    """An offer definition. ``kind`` decides which value fields apply: ``percent`` (1–100), ``fixed``
    (``amount_minor`` + ``currency``) or ``free_product`` (``product_sku`` or ``product_id``). ``value_rule``
    optionally sets the value per contact at issue time, e.g. ``{"by": "ltv", "tiers": [{"min": 0, "percent": 10},
    {"min": 50000, "percent": 15}]}`` (``min`` in minor units of the workspace currency) or
    ``{"by": "clv_tier", "groups": {"A": {"percent": 20}, "B": {"percent": 15}}}``."""

    model_config = ConfigDict(extra="forbid")

    key: OfferKey
    name: Text = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=2000)
    kind: OfferKind
    percent: int | None = Field(default=None, ge=1, le=100)
    amount_minor: int | None = Field(default=None, ge=1, le=10**15)
    currency: Currency | None = None
    product_sku: str | None = Field(default=None, min_length=1, max_length=100)
    product_id: int | None = None
    min_order_minor: int | None = Field(default=None, ge=0, le=10**15)
    min_order_currency: Currency | None = None
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    valid_days: int | None = Field(default=None, ge=1, le=36_500)
    per_customer_limit: int | None = Field(default=None, ge=1, le=1_000_000)
    value_rule: dict[str, Any] | None = None
    active: bool = True


class OfferUpdate(BaseModel):
    """Changes to an offer (the key stays); only the fields sent change. Coupons already issued keep their value."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(default=None, min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=2000)
    kind: OfferKind | None = None
    percent: int | None = Field(default=None, ge=1, le=100)
    amount_minor: int | None = Field(default=None, ge=1, le=10**15)
    currency: Currency | None = None
    product_sku: str | None = Field(default=None, min_length=1, max_length=100)
    product_id: int | None = None
    min_order_minor: int | None = Field(default=None, ge=0, le=10**15)
    min_order_currency: Currency | None = None
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    valid_days: int | None = Field(default=None, ge=1, le=36_500)
    per_customer_limit: int | None = Field(default=None, ge=1, le=1_000_000)
    value_rule: dict[str, Any] | None = None
    active: bool | None = None


class OfferRead(BaseModel):
    """An offer as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    key: str
    name: str
    description: str
    kind: str
    percent: int | None
    amount_minor: int | None
    currency: str | None
    product_id: int | None
    product_sku: str | None
    min_order_minor: int | None
    min_order_currency: str | None
    valid_from: datetime | None
    valid_until: datetime | None
    valid_days: int | None
    per_customer_limit: int | None
    value_rule: dict[str, Any] | None
    active: bool
    created_at: datetime
    updated_at: datetime


class CouponIssue(BaseModel):
    """Issue one coupon (for a contact or for anyone); the same ``idempotency_key`` returns the same coupon."""

    model_config = ConfigDict(extra="forbid")

    contact_id: int | None = None
    idempotency_key: Text = Field(min_length=1, max_length=200)


class CouponBulk(BaseModel):
    """Generate ``count`` codes for anyone; ``batch`` labels them (default: a fresh label)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=MAX_BULK)
    batch: str | None = Field(default=None, min_length=1, max_length=100)


class CouponBulkResult(BaseModel):
    """How many codes a bulk generation stored, under which batch label."""

    offer_key: str
    batch: str
    count: int


class CouponRead(BaseModel):
    """A coupon; ``display`` is the code grouped for printing."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    display: str
    offer_id: int
    offer_key: str
    contact_id: int | None
    status: str
    kind: str
    percent: int | None
    amount_minor: int | None
    currency: str | None
    product_sku: str | None
    expires_at: datetime | None
    idempotency_key: str | None
    batch: str | None
    issued_at: datetime
    redeemed_at: datetime | None


class CouponPage(BaseModel):
    """A page of coupons."""

    items: list[CouponRead]
    next_cursor: str | None


class RedeemIn(BaseModel):
    """Redeem a code for a contact, optionally against an order (its total decides the minimum and the discount)."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=64)
    contact_id: int | None = None
    order_id: int | None = None
    order_total_minor: int | None = Field(default=None, ge=0, le=10**15)
    currency: Currency | None = None


class RedemptionRead(BaseModel):
    """A recorded redemption; ``discount_minor`` is what the coupon took off the order (when its total is known)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    coupon_id: int
    code: str
    offer_id: int
    contact_id: int | None
    order_id: int | None
    order_total_minor: int | None
    currency: str | None
    discount_minor: int | None
    redeemed_at: datetime
