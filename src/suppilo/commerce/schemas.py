"""Pydantic shapes of products, orders, refunds and carts. Money is integer minor units plus ISO 4217."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from suppilo.commerce.money import is_currency

OrderStatus = Literal["completed", "partially_refunded", "refunded", "cancelled"]
CartStatus = Literal["open", "converted", "abandoned"]
ORDER_STATUSES: tuple[str, ...] = ("completed", "partially_refunded", "refunded", "cancelled")
CART_STATUSES: tuple[str, ...] = ("open", "converted", "abandoned")


def _currency(value: str) -> str:
    code = value.strip().upper()
    if not is_currency(code):
        raise ValueError(f"{value!r} is not a known ISO 4217 currency code")
    return code


def _strip(value: str) -> str:
    out = value.strip()
    if not out:
        raise ValueError("must not be empty")
    return out


Currency = Annotated[str, AfterValidator(_currency)]
Text = Annotated[str, AfterValidator(_strip)]
MinorAmount = Annotated[int, Field(ge=0, le=10**15)]


class ProductCreate(BaseModel):
    """A catalogue product."""

    sku: Text = Field(min_length=1, max_length=100)
    name: Text = Field(min_length=1, max_length=300)
    category: str | None = Field(default=None, max_length=200)
    price_minor: MinorAmount
    currency: Currency
    url: str | None = Field(default=None, max_length=2000)
    image_url: str | None = Field(default=None, max_length=2000)
    properties: dict[str, Any] = Field(default_factory=dict)


class ProductUpdate(BaseModel):
    """Changes to a product; only the fields sent change."""

    sku: Text | None = Field(default=None, min_length=1, max_length=100)
    name: Text | None = Field(default=None, min_length=1, max_length=300)
    category: str | None = Field(default=None, max_length=200)
    price_minor: int | None = Field(default=None, ge=0, le=10**15)
    currency: Currency | None = None
    url: str | None = Field(default=None, max_length=2000)
    image_url: str | None = Field(default=None, max_length=2000)
    properties: dict[str, Any] | None = None


class ProductRead(BaseModel):
    """A product as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    sku: str
    name: str
    category: str | None
    price_minor: int
    currency: str
    url: str | None
    image_url: str | None
    properties: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ProductPage(BaseModel):
    """A page of products."""

    items: list[ProductRead]
    next_cursor: str | None


class OrderLineIn(BaseModel):
    """One line of an order; ``sku`` links it to a catalogue product when one has that SKU."""

    sku: Text = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, max_length=300)
    category: str | None = Field(default=None, max_length=200)
    quantity: int = Field(default=1, ge=1, le=1_000_000)
    unit_price_minor: int | None = Field(default=None, ge=0, le=10**15)


class OrderCreate(BaseModel):
    """An order as a shop reports it; ``external_id`` is the upsert key.

    Totals: ``subtotal_minor`` defaults to the sum of the lines; ``total_minor`` to
    subtotal − discount + tax + shipping. Amounts that are given must agree.
    """

    external_id: Text = Field(min_length=1, max_length=200)
    contact_id: int | None = None
    email: str | None = Field(default=None, max_length=320)
    placed_at: AwareDatetime
    currency: Currency
    subtotal_minor: int | None = Field(default=None, ge=0, le=10**15)
    discount_minor: int | None = Field(default=None, ge=0, le=10**15)
    tax_minor: int | None = Field(default=None, ge=0, le=10**15)
    shipping_minor: int | None = Field(default=None, ge=0, le=10**15)
    total_minor: int | None = Field(default=None, ge=0, le=10**15)
    coupon_code: str | None = Field(default=None, max_length=100)
    channel: str | None = Field(default=None, max_length=32)
    properties: dict[str, Any] = Field(default_factory=dict)
    lines: list[OrderLineIn] = Field(default_factory=list, max_length=1000)


class OrderLineRead(BaseModel):
    """A stored order line."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    product_id: int | None
    sku: str
    name: str
    category: str | None
    quantity: int
    unit_price_minor: int


class OrderRead(BaseModel):
    """An order as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    external_id: str
    contact_id: int | None
    status: str
    placed_at: datetime
    currency: str
    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    shipping_minor: int
    total_minor: int
    refunded_minor: int
    coupon_code: str | None
    channel: str | None
    properties: dict[str, Any]
    lines: list[OrderLineRead]
    created_at: datetime
    updated_at: datetime


class OrderPage(BaseModel):
    """A page of orders."""

    items: list[OrderRead]
    next_cursor: str | None


class CurrencyTotals(BaseModel):
    """A contact's orders in one currency (amounts are never summed across currencies)."""

    currency: str
    orders: int
    total_minor: int
    refunded_minor: int
    net_minor: int
    first_order_at: datetime | None
    last_order_at: datetime | None


class OrderSummary(BaseModel):
    """A contact's orders, one entry per currency."""

    contact_id: int
    by_currency: list[CurrencyTotals]


class RefundCreate(BaseModel):
    """A refund; without ``amount_minor`` the whole remaining amount is refunded."""

    external_id: Text = Field(min_length=1, max_length=200)
    amount_minor: int | None = Field(default=None, ge=1, le=10**15)
    reason: str = Field(default="", max_length=500)
    refunded_at: AwareDatetime | None = None


class RefundRead(BaseModel):
    """A stored refund."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    external_id: str
    order_id: int
    amount_minor: int
    currency: str
    refunded_at: datetime
    reason: str


class CartLineIn(BaseModel):
    """One line of a cart."""

    sku: Text = Field(min_length=1, max_length=100)
    name: str | None = Field(default=None, max_length=300)
    category: str | None = Field(default=None, max_length=200)
    quantity: int = Field(default=1, ge=1, le=1_000_000)
    unit_price_minor: int | None = Field(default=None, ge=0, le=10**15)


class CartPut(BaseModel):
    """The whole state of a cart; ``value_minor`` defaults to the sum of the lines and must agree with it."""

    contact_id: int | None = None
    email: str | None = Field(default=None, max_length=320)
    currency: Currency
    lines: list[CartLineIn] = Field(default_factory=list, max_length=1000)
    value_minor: int | None = Field(default=None, ge=0, le=10**15)
    last_activity_at: AwareDatetime | None = None


class CartLineRead(BaseModel):
    """A cart line as stored."""

    sku: str
    product_id: int | None = None
    name: str = ""
    category: str | None = None
    quantity: int
    unit_price_minor: int


class CartRead(BaseModel):
    """A cart as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    external_id: str
    contact_id: int | None
    status: str
    currency: str
    value_minor: int
    lines: list[CartLineRead]
    order_id: int | None
    last_activity_at: datetime
    created_at: datetime
    updated_at: datetime


class CartPage(BaseModel):
    """A page of carts."""

    items: list[CartRead]
    next_cursor: str | None
