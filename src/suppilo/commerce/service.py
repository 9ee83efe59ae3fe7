"""Commerce use cases: products, orders (upsert on the shop's id), refunds, carts and Segment e-commerce events.

Services flush, never commit. Money is integer minor units plus an ISO 4217 code; amounts in tracked events
(decimal major units) are converted with ``commerce.money``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suppilo.commerce import repository as repo
from suppilo.commerce.models import Cart, Order, OrderLine, Product, Refund
from suppilo.commerce.money import major_number, normalize_currency, to_minor
from suppilo.commerce.schemas import (
    CART_STATUSES,
    ORDER_STATUSES,
    CartLineIn,
    CartPut,
    OrderCreate,
    OrderLineIn,
    ProductCreate,
    ProductUpdate,
    RefundCreate,
)
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact
from suppilo.contacts.normalize import normalize_email
from suppilo.db.base import utcnow
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.events import service as events_service
from suppilo.loyalty import service as loyalty_service
from suppilo.offers import service as offers_service
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.models import Workspace

ECOMMERCE_EVENTS: frozenset[str] = frozenset(
    {
        "Order Completed",
        "Order Refunded",
        "Order Cancelled",
        "Product Added",
        "Product Removed",
        "Cart Viewed",
        "Checkout Started",
    }
)
CART_EVENTS = frozenset({"Product Added", "Product Removed", "Cart Viewed", "Checkout Started"})
DEFAULT_CART_ABANDON_MINUTES = 60
# How many applied event message ids a cart remembers (replays arrive close to the original).
CART_MESSAGE_MEMORY = 50


class CommerceError(DomainError):
    """A refused commerce operation."""


@dataclass
class LineData:
    """An order or cart line resolved against the catalogue."""

    sku: str
    name: str
    category: str | None
    quantity: int
    unit_price_minor: int
    product_id: int | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.sku, self.name, self.category, self.quantity, self.unit_price_minor, self.product_id)

    def as_cart_line(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "product_id": self.product_id,
            "name": self.name,
            "category": self.category,
            "quantity": self.quantity,
            "unit_price_minor": self.unit_price_minor,
        }


@dataclass
class OrderData:
    """An order ready to store: totals resolved, lines linked to products."""

    external_id: str
    contact_id: int | None
    placed_at: datetime
    currency: str
    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    shipping_minor: int
    total_minor: int
    coupon_code: str | None
    channel: str | None
    properties: dict[str, Any]
    lines: list[LineData] = field(default_factory=list)


# --- shared helpers -----------------------------------------------------------------------------------------------


def cart_abandon_minutes(workspace: Workspace) -> int:
    """The workspace's idle time after which an open cart counts as abandoned (``settings.cart_abandon_minutes``)."""
    value = (workspace.settings or {}).get("cart_abandon_minutes", DEFAULT_CART_ABANDON_MINUTES)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return DEFAULT_CART_ABANDON_MINUTES
    return int(value)


def resolve_contact(
    session: Session,
    workspace_id: int,
    *,
    contact_id: int | None,
    email: str | None,
    source: str,
) -> int | None:
    """The id of the contact named by id (must exist here) or by email (created when missing)."""
    if contact_id is not None:
        if repo.contact_exists(session, workspace_id, contact_id) is None:
            raise NotFound("contact_id", f"contact {contact_id} not found")
        return contact_id
    if not email:
        return None
    contact, _created = contacts_service.upsert_contact_by_email(
        session, workspace_id, normalize_email(email), {}, source=source
    )
    return contact.id


def _link_lines(
    session: Session, workspace_id: int, currency: str, lines: Sequence[OrderLineIn | CartLineIn]
) -> list[LineData]:
    """Lines linked to catalogue products by SKU; a missing unit price is the product's (same currency only)."""
    products = repo.products_by_sku(session, workspace_id, {line.sku for line in lines})
    out: list[LineData] = []
    for i, line in enumerate(lines):
        product = products.get(line.sku)
        price = line.unit_price_minor
        if price is None:
            if product is None:
                raise CommerceError(
                    f"lines[{i}].unit_price_minor", f"no product has SKU {line.sku!r}: give the unit price"
                )
            if product.currency != currency:
                raise CommerceError(
                    f"lines[{i}].unit_price_minor",
                    f"product {line.sku!r} is priced in {product.currency}, the order is in {currency}: "
                    "give the unit price",
                )
            price = product.price_minor
        out.append(
            LineData(
                sku=line.sku,
                name=line.name or (product.name if product else ""),
                category=line.category if line.category is not None else (product.category if product else None),
                quantity=line.quantity,
                unit_price_minor=price,
                product_id=product.id if product else None,
            )
        )
    return out


def resolve_totals(
    lines: list[LineData],
    *,
    subtotal: int | None,
    discount: int | None,
    tax: int | None,
    shipping: int | None,
    total: int | None,
    strict: bool,
    prefix: str = "",
) -> tuple[int, int, int, int, int]:
    """(subtotal, discount, tax, shipping, total) from the parts given.

    ``strict``: amounts that are given must agree (subtotal = Σ lines; total = subtotal − discount + tax +
    shipping), else CommerceError naming the field. Not strict (tracked events, where shops compute totals
    their own way): the total given wins and missing parts are derived.
    """
    lines_sum = sum(line.quantity * line.unit_price_minor for line in lines) if lines else None
    if strict and subtotal is not None and lines_sum is not None and subtotal != lines_sum:
        raise CommerceError(
            f"{prefix}subtotal_minor",
            f"subtotal_minor {subtotal} is not the sum of the lines ({lines_sum})",
            "totals_mismatch",
        )
    sub = subtotal if subtotal is not None else lines_sum
    d, t, s = discount or 0, tax or 0, shipping or 0
    if total is None:
        if sub is None:
            raise CommerceError(f"{prefix}total_minor", "give total_minor, subtotal_minor or lines", "missing_total")
        computed = sub - d + t + s
        if computed < 0:
            raise CommerceError(
                f"{prefix}discount_minor", f"the discount {d} exceeds the subtotal {sub}", "negative_total"
            )
        return sub, d, t, s, computed
    if sub is None:
        derived = total + d - t - s
        if derived < 0:
            if strict:
                raise CommerceError(
                    f"{prefix}total_minor",
                    f"total_minor {total} is less than tax + shipping − discount ({t + s - d})",
                    "totals_mismatch",
                )
            derived = total
        return derived, d, t, s, total
    expected = sub - d + t + s
    if strict and expected != total:
        raise CommerceError(
            f"{prefix}total_minor",
            f"total_minor {total} is not subtotal − discount + tax + shipping ({sub} − {d} + {t} + {s} = {expected})",
            "totals_mismatch",
        )
    return sub, d, t, s, total


def _refund_status(order: Order) -> None:
    if order.status == "cancelled":
        return
    if order.refunded_minor <= 0:
        order.status = "completed"
    elif order.refunded_minor >= order.total_minor:
        order.status = "refunded"
    else:
        order.status = "partially_refunded"


# --- products -----------------------------------------------------------------------------------------------------


def create_product(session: Session, workspace_id: int, data: ProductCreate) -> Product:
    """A new catalogue product; its SKU is unique in the workspace."""
    if repo.get_product_by_sku(session, workspace_id, data.sku) is not None:
        raise Conflict("sku", f"a product with SKU {data.sku!r} already exists")
    product = Product(workspace_id=workspace_id, **data.model_dump())
    try:
        with session.begin_nested():
            session.add(product)
            session.flush()
    except IntegrityError as exc:
        raise Conflict("sku", f"a product with SKU {data.sku!r} already exists") from exc
    return product


def get_product(session: Session, workspace_id: int, product_id: int) -> Product:
    """A product of this workspace."""
    product = repo.get_product(session, workspace_id, product_id)
    if product is None:
        raise NotFound("product_id", f"product {product_id} not found")
    return product


def update_product(session: Session, workspace_id: int, product_id: int, data: ProductUpdate) -> Product:
    """Change the fields sent."""
    product = get_product(session, workspace_id, product_id)
    changes = data.model_dump(exclude_unset=True)
    for required in ("sku", "name", "price_minor", "currency", "properties"):
        if required in changes and changes[required] is None:
            raise CommerceError(required, f"{required} cannot be null")
    new_sku = changes.get("sku")
    if (
        new_sku is not None
        and new_sku != product.sku
        and repo.get_product_by_sku(session, workspace_id, new_sku) is not None
    ):
        raise Conflict("sku", f"a product with SKU {new_sku!r} already exists")
    for key, value in changes.items():
        setattr(product, key, value)
    session.flush()
    return product


def delete_product(session: Session, workspace_id: int, product_id: int) -> None:
    """Remove a product; order lines keep their SKU, name and price."""
    product = get_product(session, workspace_id, product_id)
    session.delete(product)
    session.flush()


def list_products(
    session: Session,
    workspace_id: int,
    *,
    category: str | None = None,
    q: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Product], str | None]:
    """A page of products (filter by category, prefix of name or SKU)."""
    return repo.list_products(session, workspace_id, category=category, q=q, cursor=cursor, limit=limit)


# --- orders -------------------------------------------------------------------------------------------------------


def order_lines(session: Session, workspace_id: int, orders: list[Order]) -> dict[int, list[OrderLine]]:
    """The lines of these orders, by order id."""
    return repo.order_lines(session, workspace_id, [o.id for o in orders])


def get_order(session: Session, workspace_id: int, order_id: int) -> Order:
    """An order of this workspace."""
    order = repo.get_order(session, workspace_id, order_id)
    if order is None:
        raise NotFound("order_id", f"order {order_id} not found")
    return order


def list_orders(
    session: Session,
    workspace_id: int,
    *,
    contact_id: int | None = None,
    placed_after: datetime | None = None,
    placed_before: datetime | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Order], str | None]:
    """A page of orders, newest first."""
    if status is not None and status not in ORDER_STATUSES:
        raise CommerceError("status", f"status must be one of {', '.join(ORDER_STATUSES)}")
    return repo.list_orders(
        session,
        workspace_id,
        contact_id=contact_id,
        placed_after=placed_after,
        placed_before=placed_before,
        status=status,
        cursor=cursor,
        limit=limit,
    )


def contact_order_summary(session: Session, workspace_id: int, contact_id: int) -> list[dict[str, Any]]:
    """A contact's orders per currency: count, total, refunded and net (never summed across currencies)."""
    if repo.contact_exists(session, workspace_id, contact_id) is None:
        raise NotFound("contact_id", f"contact {contact_id} not found")
    return repo.contact_order_totals(session, workspace_id, contact_id)


def upsert_order(session: Session, workspace_id: int, data: OrderCreate) -> tuple[Order, bool]:
    """Create or update the order with ``data.external_id``; True when it was created.

    A created order moves its contact along the lifecycle (first_order / repeat_order), converts the cart
    it came from and is recorded as an 'Order Completed' event.
    """
    contact_id = resolve_contact(session, workspace_id, contact_id=data.contact_id, email=data.email, source="order")
    lines = _link_lines(session, workspace_id, data.currency, data.lines)
    sub, d, t, s, total = resolve_totals(
        lines,
        subtotal=data.subtotal_minor,
        discount=data.discount_minor,
        tax=data.tax_minor,
        shipping=data.shipping_minor,
        total=data.total_minor,
        strict=True,
    )
    order_data = OrderData(
        external_id=data.external_id,
        contact_id=contact_id,
        placed_at=data.placed_at,
        currency=data.currency,
        subtotal_minor=sub,
        discount_minor=d,
        tax_minor=t,
        shipping_minor=s,
        total_minor=total,
        coupon_code=data.coupon_code,
        channel=data.channel,
        properties=data.properties,
        lines=lines,
    )
    return save_order(session, workspace_id, order_data, record_event=True)


def save_order(session: Session, workspace_id: int, data: OrderData, *, record_event: bool) -> tuple[Order, bool]:
    """Store ``data`` as the order with its external id (insert or update); True when inserted."""
    workspace = workspaces_service.get_workspace(session, workspace_id)
    order = repo.get_order_by_external_id(session, workspace_id, data.external_id, lock=True)
    created = False
    gained_contact = False
    if order is None:
        order = Order(workspace_id=workspace_id, external_id=data.external_id, status="completed", refunded_minor=0)
        _assign_order(order, data)
        try:
            with session.begin_nested():
                session.add(order)
                session.flush()
            created = True
        except IntegrityError:
            # Another transaction stored the same external id first: update that one instead.
            order = repo.get_order_by_external_id(session, workspace_id, data.external_id, lock=True)
            if order is None:
                raise
    if created:
        _replace_lines(session, workspace_id, order, data.lines)
        gained_contact = order.contact_id is not None
    else:
        if data.currency != order.currency and order.refunded_minor > 0:
            raise Conflict("currency", f"order {order.external_id!r} has refunds in {order.currency}")
        if data.total_minor < order.refunded_minor:
            raise Conflict("total_minor", f"order {order.external_id!r} already has {order.refunded_minor} refunded")
        gained_contact = order.contact_id is None and data.contact_id is not None
        _assign_order(order, data, keep_contact=True)
        existing = repo.order_lines(session, workspace_id, [order.id])[order.id]
        current = [
            LineData(ln.sku, ln.name, ln.category, ln.quantity, ln.unit_price_minor, ln.product_id).key()
            for ln in existing
        ]
        if current != [ln.key() for ln in data.lines]:
            session.execute(
                delete(OrderLine).where(OrderLine.workspace_id == workspace_id, OrderLine.order_id == order.id)
            )
            _replace_lines(session, workspace_id, order, data.lines)
        _refund_status(order)
        session.flush()
    if created or gained_contact:
        _convert_cart(session, workspace_id, order)
        if order.contact_id is not None and order.status != "cancelled":
            _apply_order_lifecycle(session, workspace, order)
        loyalty_service.earn_for_order(session, workspace_id, order)
    if order.coupon_code and order.status != "cancelled":
        offers_service.redeem_order_coupon(session, workspace_id, order)  # never refuses the order
    if created and record_event:
        events_service.record_event(
            session,
            workspace_id,
            order.contact_id,
            "Order Completed",
            order_event_properties(order, data.lines),
            order.placed_at,
            message_id=f"order:{order.id}",
        )
    return order, created


def _assign_order(order: Order, data: OrderData, *, keep_contact: bool = False) -> None:
    if not keep_contact or data.contact_id is not None:
        order.contact_id = data.contact_id
    order.placed_at = data.placed_at
    order.currency = data.currency
    order.subtotal_minor = data.subtotal_minor
    order.discount_minor = data.discount_minor
    order.tax_minor = data.tax_minor
    order.shipping_minor = data.shipping_minor
    order.total_minor = data.total_minor
    order.coupon_code = data.coupon_code
    order.channel = data.channel
    order.properties = data.properties


def _replace_lines(session: Session, workspace_id: int, order: Order, lines: list[LineData]) -> None:
    session.add_all(
        OrderLine(
            workspace_id=workspace_id,
            order_id=order.id,
            product_id=line.product_id,
            sku=line.sku,
            name=line.name,
            category=line.category,
            quantity=line.quantity,
            unit_price_minor=line.unit_price_minor,
        )
        for line in lines
    )
    session.flush()


def order_event_properties(order: Order, lines: list[LineData]) -> dict[str, Any]:
    """An order as Segment 'Order Completed' properties (decimal major units)."""
    cur = order.currency
    return {
        "order_id": order.external_id,
        "total": major_number(order.total_minor, cur),
        "revenue": major_number(order.total_minor, cur),
        "subtotal": major_number(order.subtotal_minor, cur),
        "tax": major_number(order.tax_minor, cur),
        "shipping": major_number(order.shipping_minor, cur),
        "discount": major_number(order.discount_minor, cur),
        "coupon": order.coupon_code,
        "currency": cur,
        "products": [
            {
                "sku": line.sku,
                "name": line.name,
                "category": line.category,
                "price": major_number(line.unit_price_minor, cur),
                "quantity": line.quantity,
            }
            for line in lines
        ],
        "suppilo_order_id": order.id,
    }


def _apply_order_lifecycle(session: Session, workspace: Workspace, order: Order) -> None:
    assert order.contact_id is not None
    contact = session.get(Contact, order.contact_id)
    if contact is None or contact.workspace_id != workspace.id:
        return
    earlier = repo.other_orders_of_contact(session, workspace.id, contact.id, order.id)
    trigger = "repeat_order" if earlier else "first_order"
    contacts_service.apply_rule(
        session,
        contact,
        trigger,
        rules=contacts_service.lifecycle_rules(workspace.settings),
        stages=contacts_service.stage_specs(session, workspace.id),
        at=order.placed_at,
        detail=f"order {order.id} ({order.external_id})",
    )


def _convert_cart(session: Session, workspace_id: int, order: Order) -> None:
    """Mark the cart the order came from converted: the one named by cart_id/checkout_id, else the contact's
    open cart last active before the order."""
    ref = order.properties.get("cart_id") or order.properties.get("checkout_id")
    cart: Cart | None = None
    if ref is not None and str(ref):
        cart = repo.get_cart_by_external_id(session, workspace_id, str(ref))
    elif order.contact_id is not None:
        cart = repo.latest_open_cart(session, workspace_id, order.contact_id)
        if cart is not None and cart.last_activity_at > order.placed_at:
            cart = None
    if cart is None or cart.status == "converted":
        return
    cart.status = "converted"
    cart.order_id = order.id
    if cart.contact_id is None:
        cart.contact_id = order.contact_id
    session.flush()


def cancel_order(session: Session, workspace_id: int, order_id: int) -> Order:
    """Mark an order cancelled."""
    order = get_order(session, workspace_id, order_id)
    order.status = "cancelled"
    session.flush()
    loyalty_service.reverse_for_order(session, workspace_id, order)
    return order


# --- refunds ------------------------------------------------------------------------------------------------------


def list_refunds(session: Session, workspace_id: int, order_id: int) -> list[Refund]:
    """The refunds of an order of this workspace."""
    get_order(session, workspace_id, order_id)
    return repo.list_refunds(session, workspace_id, order_id)


def create_refund(session: Session, workspace_id: int, order_id: int, data: RefundCreate) -> tuple[Refund, bool]:
    """Refund (part of) an order, idempotent on ``data.external_id``; True when a refund was made."""
    order = repo.get_order(session, workspace_id, order_id, lock=True)
    if order is None:
        raise NotFound("order_id", f"order {order_id} not found")
    existing = repo.get_refund_by_external_id(session, workspace_id, data.external_id)
    if existing is not None:
        if existing.order_id != order.id or (
            data.amount_minor is not None and data.amount_minor != existing.amount_minor
        ):
            raise Conflict("external_id", f"refund {data.external_id!r} was already made with other details")
        return existing, False
    remaining = order.total_minor - order.refunded_minor
    amount = data.amount_minor if data.amount_minor is not None else remaining
    if remaining <= 0:
        raise CommerceError("amount_minor", f"order {order.external_id!r} is already fully refunded", "over_refund")
    if amount > remaining:
        raise CommerceError(
            "amount_minor", f"the refund {amount} exceeds the {remaining} that remains of the order", "over_refund"
        )
    refund = _add_refund(session, order, data.external_id, amount, data.reason, data.refunded_at or utcnow())
    return refund, True


def _add_refund(session: Session, order: Order, external_id: str, amount: int, reason: str, at: datetime) -> Refund:
    refund = Refund(
        workspace_id=order.workspace_id,
        external_id=external_id,
        order_id=order.id,
        amount_minor=amount,
        currency=order.currency,
        refunded_at=at,
        reason=reason[:500],
    )
    session.add(refund)
    order.refunded_minor += amount
    _refund_status(order)
    session.flush()
    loyalty_service.reverse_for_order(session, order.workspace_id, order, now=at)
    return refund


# --- carts --------------------------------------------------------------------------------------------------------


def get_cart(session: Session, workspace_id: int, cart_id: int) -> Cart:
    """A cart of this workspace."""
    cart = repo.get_cart(session, workspace_id, cart_id)
    if cart is None:
        raise NotFound("cart_id", f"cart {cart_id} not found")
    return cart


def get_cart_by_external_id(session: Session, workspace_id: int, external_id: str) -> Cart:
    """A cart of this workspace by the shop's cart id."""
    cart = repo.get_cart_by_external_id(session, workspace_id, external_id)
    if cart is None:
        raise NotFound("external_id", f"cart {external_id!r} not found")
    return cart


def list_carts(
    session: Session,
    workspace_id: int,
    *,
    status: str | None = None,
    contact_id: int | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Cart], str | None]:
    """A page of carts, newest first."""
    if status is not None and status not in CART_STATUSES:
        raise CommerceError("status", f"status must be one of {', '.join(CART_STATUSES)}")
    return repo.list_carts(session, workspace_id, status=status, contact_id=contact_id, cursor=cursor, limit=limit)


def put_cart(session: Session, workspace_id: int, external_id: str, data: CartPut) -> tuple[Cart, bool]:
    """Create or replace the cart with this external id; True when created. A converted cart is final."""
    ext = external_id.strip()
    if not ext or len(ext) > 200:
        raise CommerceError("external_id", "the cart id must be 1 to 200 characters")
    at = data.last_activity_at or utcnow()
    contact_id = resolve_contact(session, workspace_id, contact_id=data.contact_id, email=data.email, source="cart")
    lines = _link_lines(session, workspace_id, data.currency, data.lines)
    lines_sum = sum(line.quantity * line.unit_price_minor for line in lines)
    if data.value_minor is not None and lines and data.value_minor != lines_sum:
        raise CommerceError(
            "value_minor",
            f"value_minor {data.value_minor} is not the sum of the lines ({lines_sum})",
            "totals_mismatch",
        )
    value = lines_sum if lines else (data.value_minor or 0)
    cart = repo.get_cart_by_external_id(session, workspace_id, ext)
    created = cart is None
    if cart is None:
        cart = Cart(workspace_id=workspace_id, external_id=ext, status="open", applied_message_ids=[])
        session.add(cart)
    elif cart.status == "converted":
        raise Conflict("external_id", f"cart {ext!r} was converted into an order and cannot change")
    cart.status = "open"
    if contact_id is not None:
        cart.contact_id = contact_id
    cart.currency = data.currency
    cart.lines = [line.as_cart_line() for line in lines]
    cart.value_minor = value
    cart.last_activity_at = at
    session.flush()
    return cart, created


# --- Segment e-commerce events ------------------------------------------------------------------------------------


def apply_ecommerce_event(
    session: Session,
    workspace_id: int,
    contact_id: int | None,
    name: str,
    properties: dict[str, Any],
    occurred_at: datetime,
    message_id: str,
) -> None:
    """Turn a Segment e-commerce (spec v2) track event into commerce records.

    'Order Completed' upserts the order (on order_id, else checkout_id); 'Order Refunded' refunds it (all of
    what remains, the amount given, or the products listed; once per message id); 'Order Cancelled' cancels
    it; 'Product Added'/'Product Removed'/'Cart Viewed'/'Checkout Started' update the cart named by cart_id,
    else the contact's open cart. Amounts are decimal major units. Raises DomainError with the property path
    (e.g. ``properties.order_id``) when the event cannot become a record. Other names are ignored.
    """
    if name not in ECOMMERCE_EVENTS:
        return
    if not isinstance(properties, dict):
        raise CommerceError("properties", "properties must be an object")
    if name == "Order Completed":
        data = _event_order(session, workspace_id, contact_id, properties, occurred_at)
        save_order(session, workspace_id, data, record_event=False)
    elif name == "Order Refunded":
        _event_refund(session, workspace_id, properties, occurred_at, message_id)
    elif name == "Order Cancelled":
        order = _event_find_order(session, workspace_id, properties)
        if order.status != "cancelled":
            order.status = "cancelled"
            session.flush()
            loyalty_service.reverse_for_order(session, workspace_id, order, now=occurred_at)
    else:
        _event_cart(session, workspace_id, contact_id, name, properties, occurred_at, message_id)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    out = str(value).strip()
    return out or None


def _event_order_ref(properties: dict[str, Any]) -> str:
    ref = _text(properties.get("order_id")) or _text(properties.get("checkout_id"))
    if ref is None:
        raise CommerceError("properties.order_id", "the event has no order_id (or checkout_id)", "missing_order_id")
    if len(ref) > 200:
        raise CommerceError("properties.order_id", "order_id is longer than 200 characters")
    return ref


def _event_find_order(session: Session, workspace_id: int, properties: dict[str, Any]) -> Order:
    ref = _event_order_ref(properties)
    order = repo.get_order_by_external_id(session, workspace_id, ref, lock=True)
    if order is None:
        raise CommerceError("properties.order_id", f"no order has order_id {ref!r}", "unknown_order")
    return order


def _event_currency(session: Session, workspace_id: int, properties: dict[str, Any], fallback: str | None) -> str:
    raw = properties.get("currency")
    if raw is None or raw == "":
        return fallback or workspaces_service.get_workspace(session, workspace_id).currency
    return normalize_currency(raw, "properties.currency")


def _event_amount(properties: dict[str, Any], key: str, currency: str, prefix: str = "properties") -> int | None:
    value = properties.get(key)
    if value is None or value == "":
        return None
    amount = to_minor(value, currency, f"{prefix}.{key}")
    if amount < 0:
        raise CommerceError(f"{prefix}.{key}", f"{key} must not be negative", "invalid_amount")
    return amount


def _event_quantity(value: Any, path: str, default: int = 1) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise CommerceError(path, "quantity must be a whole number", "invalid_quantity")
    try:
        number = int(str(value).strip())
    except ValueError as exc:
        raise CommerceError(path, f"quantity must be a whole number; got {value!r}", "invalid_quantity") from exc
    if number < 1:
        raise CommerceError(path, "quantity must be at least 1", "invalid_quantity")
    return number


def _event_product(
    item: Any, currency: str, path: str, products: dict[str, Product], *, need_price: bool = True
) -> LineData:
    if not isinstance(item, dict):
        raise CommerceError(path, "a product must be an object")
    sku = _text(item.get("sku")) or _text(item.get("product_id"))
    if sku is None:
        raise CommerceError(f"{path}.sku", "the product has neither sku nor product_id", "missing_sku")
    sku = sku[:100]
    product = products.get(sku)
    price = _event_amount(item, "price", currency, path)
    if price is None:
        if product is not None and product.currency == currency:
            price = product.price_minor
        elif need_price:
            raise CommerceError(f"{path}.price", f"the product {sku!r} has no price", "missing_price")
        else:
            price = 0
    name = _text(item.get("name")) or (product.name if product else "")
    category = _text(item.get("category")) or (product.category if product else None)
    return LineData(
        sku=sku,
        name=name[:300],
        category=category[:200] if category else None,
        quantity=_event_quantity(item.get("quantity"), f"{path}.quantity"),
        unit_price_minor=price,
        product_id=product.id if product else None,
    )


def _event_products(
    session: Session, workspace_id: int, properties: dict[str, Any], currency: str
) -> list[LineData] | None:
    items = properties.get("products")
    if items is None:
        return None
    if not isinstance(items, list):
        raise CommerceError("properties.products", "products must be a list")
    skus = {
        s[:100]
        for it in items
        if isinstance(it, dict)
        for s in [_text(it.get("sku")) or _text(it.get("product_id"))]
        if s
    }
    products = repo.products_by_sku(session, workspace_id, skus)
    return [_event_product(item, currency, f"properties.products[{i}]", products) for i, item in enumerate(items)]


def _event_order(
    session: Session, workspace_id: int, contact_id: int | None, properties: dict[str, Any], occurred_at: datetime
) -> OrderData:
    ref = _event_order_ref(properties)
    currency = _event_currency(session, workspace_id, properties, None)
    lines = _event_products(session, workspace_id, properties, currency) or []
    total = _event_amount(properties, "total", currency)
    if total is None:
        total = _event_amount(properties, "revenue", currency)
    sub, d, t, s, tot = resolve_totals(
        lines,
        subtotal=_event_amount(properties, "subtotal", currency),
        discount=_event_amount(properties, "discount", currency),
        tax=_event_amount(properties, "tax", currency),
        shipping=_event_amount(properties, "shipping", currency),
        total=total,
        strict=False,
        prefix="properties.",
    )
    kept = {k: v for k, v in properties.items() if k != "products"}
    channel = _text(properties.get("affiliation"))
    coupon = _text(properties.get("coupon"))
    return OrderData(
        external_id=ref,
        contact_id=contact_id,
        placed_at=occurred_at,
        currency=currency,
        subtotal_minor=sub,
        discount_minor=d,
        tax_minor=t,
        shipping_minor=s,
        total_minor=tot,
        coupon_code=coupon[:100] if coupon else None,
        channel=channel[:32] if channel else None,
        properties=kept,
        lines=lines,
    )


def _event_refund(
    session: Session, workspace_id: int, properties: dict[str, Any], occurred_at: datetime, message_id: str
) -> None:
    order = _event_find_order(session, workspace_id, properties)
    external_id = f"event:{message_id}"[:200]
    if repo.get_refund_by_external_id(session, workspace_id, external_id) is not None:
        return
    currency = _event_currency(session, workspace_id, properties, order.currency)
    if currency != order.currency:
        raise CommerceError(
            "properties.currency", f"the order is in {order.currency}, the refund in {currency}", "currency_mismatch"
        )
    remaining = order.total_minor - order.refunded_minor
    path = "properties.total"
    items = properties.get("products")
    amount: int | None
    if items:
        if not isinstance(items, list):
            raise CommerceError("properties.products", "products must be a list")
        by_sku = {ln.sku: ln for ln in repo.order_lines(session, workspace_id, [order.id])[order.id]}
        amount = 0
        for i, item in enumerate(items):
            item_path = f"properties.products[{i}]"
            line = _event_product(item, currency, item_path, {}, need_price=False)
            price = _event_amount(item, "price", currency, item_path)
            if price is None:
                ordered = by_sku.get(line.sku)
                if ordered is None:
                    raise CommerceError(
                        f"{item_path}.sku", f"the order has no product {line.sku!r} and no price is given"
                    )
                price = ordered.unit_price_minor
            amount += price * line.quantity
        path = "properties.products"
    else:
        amount = _event_amount(properties, "total", currency)
        if amount is None:
            amount = _event_amount(properties, "revenue", currency)
        if amount is None:
            amount = remaining
    if amount <= 0 and remaining <= 0:
        return
    if amount > remaining:
        raise CommerceError(
            path, f"the refund {amount} exceeds the {remaining} that remains of the order", "over_refund"
        )
    if amount <= 0:
        raise CommerceError(path, "the refund amount must be positive", "invalid_amount")
    reason = _text(properties.get("reason")) or ""
    _add_refund(session, order, external_id, amount, reason, occurred_at)


def _event_cart(
    session: Session,
    workspace_id: int,
    contact_id: int | None,
    name: str,
    properties: dict[str, Any],
    occurred_at: datetime,
    message_id: str,
) -> None:
    ref = _text(properties.get("cart_id"))
    cart: Cart | None = None
    if ref is not None:
        ref = ref[:200]
        cart = repo.get_cart_by_external_id(session, workspace_id, ref)
    elif contact_id is not None:
        cart = repo.latest_open_cart(session, workspace_id, contact_id)
        if cart is None:
            ref = f"contact:{contact_id}:{message_id}"[:200]
    else:
        raise CommerceError("properties.cart_id", "the event has no cart_id and no known contact", "missing_cart_id")
    if cart is not None:
        if message_id in (cart.applied_message_ids or []):
            return
        if cart.status == "converted":
            return
    currency = _event_currency(session, workspace_id, properties, cart.currency if cart else None)
    lines = [
        LineData(
            sku=str(ln["sku"]),
            name=str(ln.get("name") or ""),
            category=ln.get("category"),
            quantity=int(ln["quantity"]),
            unit_price_minor=int(ln["unit_price_minor"]),
            product_id=ln.get("product_id"),
        )
        for ln in (cart.lines if cart else [])
    ]
    if cart is not None and lines and currency != cart.currency:
        raise CommerceError(
            "properties.currency", f"the cart is in {cart.currency}, the event in {currency}", "currency_mismatch"
        )
    listed = _event_products(session, workspace_id, properties, currency)
    if name in ("Product Added", "Product Removed"):
        sku = _text(properties.get("sku")) or _text(properties.get("product_id"))
        if sku is None:
            raise CommerceError("properties.sku", "the event has neither sku nor product_id", "missing_sku")
        products = repo.products_by_sku(session, workspace_id, {sku[:100]})
        if name == "Product Added":
            item = _event_product(properties, currency, "properties", products)
            for ln in lines:
                if ln.sku == item.sku:
                    ln.quantity += item.quantity
                    ln.unit_price_minor = item.unit_price_minor
                    ln.name = item.name or ln.name
                    ln.category = item.category or ln.category
                    break
            else:
                lines.append(item)
        else:
            quantity = properties.get("quantity")
            removed = None if quantity is None or quantity == "" else _event_quantity(quantity, "properties.quantity")
            kept: list[LineData] = []
            for ln in lines:
                if ln.sku == sku[:100]:
                    if removed is not None and ln.quantity > removed:
                        ln.quantity -= removed
                        kept.append(ln)
                    continue
                kept.append(ln)
            lines = kept
    elif listed is not None:
        lines = listed
    value: int
    if lines:
        value = sum(ln.quantity * ln.unit_price_minor for ln in lines)
    else:
        given = _event_amount(properties, "value", currency)
        value = given if given is not None else (_event_amount(properties, "revenue", currency) or 0)
    if cart is None:
        assert ref is not None
        cart = Cart(
            workspace_id=workspace_id,
            external_id=ref,
            status="open",
            currency=currency,
            last_activity_at=occurred_at,
            applied_message_ids=[],
        )
        session.add(cart)
    if cart.contact_id is None and contact_id is not None:
        cart.contact_id = contact_id
    cart.status = "open"
    cart.currency = currency
    cart.lines = [ln.as_cart_line() for ln in lines]
    cart.value_minor = value
    cart.last_activity_at = max(cart.last_activity_at, occurred_at)
    cart.applied_message_ids = [*(cart.applied_message_ids or []), message_id][-CART_MESSAGE_MEMORY:]
    session.flush()
