"""Commerce queries; every one filters on the workspace."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from suppilo.commerce.models import Cart, Order, OrderLine, Product, Refund
from suppilo.contacts.models import Contact
from suppilo.errors import DomainError

MAX_PAGE = 500


# --- cursors ------------------------------------------------------------------------------------------------------


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque cursor for the last row of a page."""
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: Sequence[type]) -> list[Any]:
    """The values of a cursor made by ``encode_cursor``; raises DomainError(path 'cursor') when malformed."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(kinds):
            raise ValueError("wrong shape")
        out: list[Any] = []
        for value, kind in zip(raw, kinds, strict=True):
            if kind is datetime:
                parsed = datetime.fromisoformat(value)
                if parsed.tzinfo is None:
                    raise ValueError("naive time")
                out.append(parsed)
            elif kind is int:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError("not an int")
                out.append(value)
            else:
                out.append(kind(value))
        return out
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise DomainError("cursor", "the cursor is not one this API returned", "invalid_cursor") from exc


def _page_size(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


# --- products -----------------------------------------------------------------------------------------------------


def get_product(session: Session, workspace_id: int, product_id: int) -> Product | None:
    """A product of this workspace by id."""
    return session.scalar(select(Product).where(Product.workspace_id == workspace_id, Product.id == product_id))


def get_product_by_sku(session: Session, workspace_id: int, sku: str) -> Product | None:
    """A product of this workspace by SKU."""
    return session.scalar(select(Product).where(Product.workspace_id == workspace_id, Product.sku == sku))


def products_by_sku(session: Session, workspace_id: int, skus: set[str]) -> dict[str, Product]:
    """The workspace's products with these SKUs, by SKU."""
    if not skus:
        return {}
    rows = session.scalars(select(Product).where(Product.workspace_id == workspace_id, Product.sku.in_(sorted(skus))))
    return {p.sku: p for p in rows}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_products(
    session: Session,
    workspace_id: int,
    *,
    category: str | None,
    q: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Product], str | None]:
    """A page of products in id order, with the cursor of the next page."""
    size = _page_size(limit)
    stmt = select(Product).where(Product.workspace_id == workspace_id)
    if category is not None:
        stmt = stmt.where(Product.category == category)
    if q:
        pattern = _escape_like(q.strip().lower()) + "%"
        stmt = stmt.where(
            or_(func.lower(Product.name).like(pattern, escape="\\"), func.lower(Product.sku).like(pattern, escape="\\"))
        )
    if cursor:
        (after_id,) = decode_cursor(cursor, [int])
        stmt = stmt.where(Product.id > after_id)
    rows = list(session.scalars(stmt.order_by(Product.id).limit(size + 1)))
    next_cursor = encode_cursor([rows[size - 1].id]) if len(rows) > size else None
    return rows[:size], next_cursor


# --- orders -------------------------------------------------------------------------------------------------------


def _locked(session: Session, stmt: Select[Any], lock: bool) -> Select[Any]:
    if lock and session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update()
    return stmt


def get_order(session: Session, workspace_id: int, order_id: int, *, lock: bool = False) -> Order | None:
    """An order of this workspace by id (row-locked on PostgreSQL when ``lock``; SQLite writers are serial)."""
    stmt = select(Order).where(Order.workspace_id == workspace_id, Order.id == order_id)
    order: Order | None = session.scalar(_locked(session, stmt, lock))
    return order


def get_order_by_external_id(
    session: Session, workspace_id: int, external_id: str, *, lock: bool = False
) -> Order | None:
    """An order of this workspace by the shop's order id."""
    stmt = select(Order).where(Order.workspace_id == workspace_id, Order.external_id == external_id)
    order: Order | None = session.scalar(_locked(session, stmt, lock))
    return order


def order_lines(session: Session, workspace_id: int, order_ids: Sequence[int]) -> dict[int, list[OrderLine]]:
    """The lines of these orders, by order id, in insertion order."""
    out: dict[int, list[OrderLine]] = {oid: [] for oid in order_ids}
    if not order_ids:
        return out
    rows = session.scalars(
        select(OrderLine)
        .where(OrderLine.workspace_id == workspace_id, OrderLine.order_id.in_(list(order_ids)))
        .order_by(OrderLine.order_id, OrderLine.id)
    )
    for line in rows:
        out[line.order_id].append(line)
    return out


def other_orders_of_contact(session: Session, workspace_id: int, contact_id: int, order_id: int) -> int:
    """How many orders of the contact other than ``order_id`` count as purchases (cancelled ones do not)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Order)
            .where(
                Order.workspace_id == workspace_id,
                Order.contact_id == contact_id,
                Order.id != order_id,
                Order.status != "cancelled",
            )
        )
        or 0
    )


def list_orders(
    session: Session,
    workspace_id: int,
    *,
    contact_id: int | None,
    placed_after: datetime | None,
    placed_before: datetime | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Order], str | None]:
    """A page of orders, newest first, with the cursor of the next page."""
    size = _page_size(limit)
    stmt = select(Order).where(Order.workspace_id == workspace_id)
    if contact_id is not None:
        stmt = stmt.where(Order.contact_id == contact_id)
    if placed_after is not None:
        stmt = stmt.where(Order.placed_at >= placed_after)
    if placed_before is not None:
        stmt = stmt.where(Order.placed_at < placed_before)
    if status is not None:
        stmt = stmt.where(Order.status == status)
    if cursor:
        at, last_id = decode_cursor(cursor, [datetime, int])
        stmt = stmt.where(or_(Order.placed_at < at, and_(Order.placed_at == at, Order.id < last_id)))
    rows = list(session.scalars(stmt.order_by(Order.placed_at.desc(), Order.id.desc()).limit(size + 1)))
    next_cursor = encode_cursor([rows[size - 1].placed_at, rows[size - 1].id]) if len(rows) > size else None
    return rows[:size], next_cursor


def contact_order_totals(session: Session, workspace_id: int, contact_id: int) -> list[dict[str, Any]]:
    """A contact's order count and amounts, one row per currency (never summed across currencies)."""
    rows = session.execute(
        select(
            Order.currency,
            func.count().label("orders"),
            func.coalesce(func.sum(Order.total_minor), 0).label("total_minor"),
            func.coalesce(func.sum(Order.refunded_minor), 0).label("refunded_minor"),
            func.min(Order.placed_at).label("first_order_at"),
            func.max(Order.placed_at).label("last_order_at"),
        )
        .where(Order.workspace_id == workspace_id, Order.contact_id == contact_id, Order.status != "cancelled")
        .group_by(Order.currency)
        .order_by(Order.currency)
    )
    return [
        {
            "currency": r.currency,
            "orders": int(r.orders),
            "total_minor": int(r.total_minor),
            "refunded_minor": int(r.refunded_minor),
            "net_minor": int(r.total_minor) - int(r.refunded_minor),
            "first_order_at": r.first_order_at,
            "last_order_at": r.last_order_at,
        }
        for r in rows
    ]


# --- refunds ------------------------------------------------------------------------------------------------------


def get_refund_by_external_id(session: Session, workspace_id: int, external_id: str) -> Refund | None:
    """A refund of this workspace by its idempotency key."""
    return session.scalar(select(Refund).where(Refund.workspace_id == workspace_id, Refund.external_id == external_id))


def list_refunds(session: Session, workspace_id: int, order_id: int) -> list[Refund]:
    """The refunds of an order, oldest first."""
    return list(
        session.scalars(
            select(Refund)
            .where(Refund.workspace_id == workspace_id, Refund.order_id == order_id)
            .order_by(Refund.refunded_at, Refund.id)
        )
    )


# --- carts --------------------------------------------------------------------------------------------------------


def get_cart(session: Session, workspace_id: int, cart_id: int) -> Cart | None:
    """A cart of this workspace by id."""
    return session.scalar(select(Cart).where(Cart.workspace_id == workspace_id, Cart.id == cart_id))


def get_cart_by_external_id(session: Session, workspace_id: int, external_id: str) -> Cart | None:
    """A cart of this workspace by the shop's cart id."""
    return session.scalar(select(Cart).where(Cart.workspace_id == workspace_id, Cart.external_id == external_id))


def latest_open_cart(session: Session, workspace_id: int, contact_id: int) -> Cart | None:
    """The contact's most recently active open cart."""
    return session.scalar(
        select(Cart)
        .where(Cart.workspace_id == workspace_id, Cart.contact_id == contact_id, Cart.status == "open")
        .order_by(Cart.last_activity_at.desc(), Cart.id.desc())
        .limit(1)
    )


def list_carts(
    session: Session,
    workspace_id: int,
    *,
    status: str | None,
    contact_id: int | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Cart], str | None]:
    """A page of carts, newest first, with the cursor of the next page."""
    size = _page_size(limit)
    stmt = select(Cart).where(Cart.workspace_id == workspace_id)
    if status is not None:
        stmt = stmt.where(Cart.status == status)
    if contact_id is not None:
        stmt = stmt.where(Cart.contact_id == contact_id)
    if cursor:
        (last_id,) = decode_cursor(cursor, [int])
        stmt = stmt.where(Cart.id < last_id)
    rows = list(session.scalars(stmt.order_by(Cart.id.desc()).limit(size + 1)))
    next_cursor = encode_cursor([rows[size - 1].id]) if len(rows) > size else None
    return rows[:size], next_cursor


def idle_open_carts(session: Session, workspace_id: int, idle_before: datetime, limit: int) -> list[Cart]:
    """Up to ``limit`` open carts of the workspace whose last activity is before ``idle_before``, locked."""
    stmt = (
        select(Cart)
        .where(Cart.workspace_id == workspace_id, Cart.status == "open", Cart.last_activity_at < idle_before)
        .order_by(Cart.last_activity_at, Cart.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def workspaces_with_open_carts(session: Session) -> list[int]:
    """Ids of the workspaces that have at least one open cart."""
    return list(session.scalars(select(Cart.workspace_id).where(Cart.status == "open").distinct()))


# --- contacts -----------------------------------------------------------------------------------------------------


def contact_exists(session: Session, workspace_id: int, contact_id: int) -> Contact | None:
    """The contact of this workspace with this id."""
    return session.scalar(select(Contact).where(Contact.workspace_id == workspace_id, Contact.id == contact_id))
