"""HTTP routes: commerce — products, orders with refunds, carts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi import status as http
from pydantic import AwareDatetime
from sqlalchemy.orm import Session

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer
from suppilo.commerce import service
from suppilo.commerce.models import Order
from suppilo.commerce.schemas import (
    CartPage,
    CartPut,
    CartRead,
    CurrencyTotals,
    OrderCreate,
    OrderLineRead,
    OrderPage,
    OrderRead,
    OrderSummary,
    ProductCreate,
    ProductPage,
    ProductRead,
    ProductUpdate,
    RefundCreate,
    RefundRead,
)
from suppilo.commerce.schemas import CartStatus as CartStatusT
from suppilo.commerce.schemas import OrderStatus as OrderStatusT

router = APIRouter(prefix="/api/v1", tags=["commerce"])

Limit = Annotated[int, Query(ge=1, le=500)]


def _order_reads(session: Session, workspace_id: int, orders: list[Order]) -> list[OrderRead]:
    lines = service.order_lines(session, workspace_id, orders)
    out = []
    for order in orders:
        data = {k: getattr(order, k) for k in OrderRead.model_fields if k != "lines"}
        data["lines"] = [OrderLineRead.model_validate(ln) for ln in lines.get(order.id, [])]
        out.append(OrderRead.model_validate(data))
    return out


# --- products -----------------------------------------------------------------------------------------------------


@router.post("/products", response_model=ProductRead, status_code=http.HTTP_201_CREATED)
def create_product(data: ProductCreate, principal: Writer, session: DbSession) -> ProductRead:
    """Add a product to the catalogue; the SKU is unique in the workspace (409 otherwise)."""
    return ProductRead.model_validate(service.create_product(session, principal.workspace_id, data))


@router.get("/products", response_model=ProductPage)
def list_products(
    principal: Reader,
    session: ReadSession,
    category: str | None = None,
    q: Annotated[str | None, Query(max_length=300, description="prefix of the name or SKU")] = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> ProductPage:
    """Products in creation order, a page at a time."""
    items, next_cursor = service.list_products(
        session, principal.workspace_id, category=category, q=q, cursor=cursor, limit=limit
    )
    return ProductPage(items=[ProductRead.model_validate(p) for p in items], next_cursor=next_cursor)


@router.get("/products/{product_id}", response_model=ProductRead)
def read_product(product_id: int, principal: Reader, session: ReadSession) -> ProductRead:
    """One product."""
    return ProductRead.model_validate(service.get_product(session, principal.workspace_id, product_id))


@router.patch("/products/{product_id}", response_model=ProductRead)
def update_product(product_id: int, data: ProductUpdate, principal: Writer, session: DbSession) -> ProductRead:
    """Change a product's fields."""
    return ProductRead.model_validate(service.update_product(session, principal.workspace_id, product_id, data))


@router.delete("/products/{product_id}", status_code=http.HTTP_204_NO_CONTENT)
def delete_product(product_id: int, principal: Writer, session: DbSession) -> Response:
    """Remove a product; order lines keep their SKU, name and price."""
    service.delete_product(session, principal.workspace_id, product_id)
    return Response(status_code=http.HTTP_204_NO_CONTENT)


# --- orders -------------------------------------------------------------------------------------------------------


@router.post("/orders", response_model=OrderRead, status_code=http.HTTP_201_CREATED)
def upsert_order(data: OrderCreate, principal: Writer, session: DbSession, response: Response) -> OrderRead:
    """Create the order with this ``external_id`` (201) or update it (200, same id)."""
    order, created = service.upsert_order(session, principal.workspace_id, data)
    if not created:
        response.status_code = http.HTTP_200_OK
    return _order_reads(session, principal.workspace_id, [order])[0]


@router.get("/orders", response_model=OrderPage)
def list_orders(
    principal: Reader,
    session: ReadSession,
    contact_id: int | None = None,
    placed_after: AwareDatetime | None = None,
    placed_before: AwareDatetime | None = None,
    status: OrderStatusT | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> OrderPage:
    """Orders, newest first (``placed_after`` inclusive, ``placed_before`` exclusive)."""
    items, next_cursor = service.list_orders(
        session,
        principal.workspace_id,
        contact_id=contact_id,
        placed_after=placed_after,
        placed_before=placed_before,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return OrderPage(items=_order_reads(session, principal.workspace_id, items), next_cursor=next_cursor)


@router.get("/orders/summary", response_model=OrderSummary)
def order_summary(principal: Reader, session: ReadSession, contact_id: Annotated[int, Query()]) -> OrderSummary:
    """A contact's orders per currency: count, total, refunded, net. Amounts are never summed across currencies."""
    rows = service.contact_order_summary(session, principal.workspace_id, contact_id)
    return OrderSummary(contact_id=contact_id, by_currency=[CurrencyTotals.model_validate(r) for r in rows])


@router.get("/orders/{order_id}", response_model=OrderRead)
def read_order(order_id: int, principal: Reader, session: ReadSession) -> OrderRead:
    """One order with its lines."""
    order = service.get_order(session, principal.workspace_id, order_id)
    return _order_reads(session, principal.workspace_id, [order])[0]


@router.post("/orders/{order_id}/cancel", response_model=OrderRead)
def cancel_order(order_id: int, principal: Writer, session: DbSession) -> OrderRead:
    """Mark an order cancelled."""
    order = service.cancel_order(session, principal.workspace_id, order_id)
    return _order_reads(session, principal.workspace_id, [order])[0]


@router.post("/orders/{order_id}/refunds", response_model=RefundRead, status_code=http.HTTP_201_CREATED)
def create_refund(
    order_id: int, data: RefundCreate, principal: Writer, session: DbSession, response: Response
) -> RefundRead:
    """Refund part or (without ``amount_minor``) all of what remains; a replayed ``external_id`` answers 200."""
    refund, created = service.create_refund(session, principal.workspace_id, order_id, data)
    if not created:
        response.status_code = http.HTTP_200_OK
    return RefundRead.model_validate(refund)


@router.get("/orders/{order_id}/refunds", response_model=list[RefundRead])
def list_refunds(order_id: int, principal: Reader, session: ReadSession) -> list[RefundRead]:
    """The refunds of an order, oldest first."""
    return [RefundRead.model_validate(r) for r in service.list_refunds(session, principal.workspace_id, order_id)]


# --- carts --------------------------------------------------------------------------------------------------------


@router.put("/carts/{external_id}", response_model=CartRead)
def put_cart(
    data: CartPut,
    principal: Writer,
    session: DbSession,
    response: Response,
    external_id: Annotated[str, Path(min_length=1, max_length=200)],
) -> CartRead:
    """Create (201) or replace (200) the cart with the shop's id."""
    cart, created = service.put_cart(session, principal.workspace_id, external_id, data)
    response.status_code = http.HTTP_201_CREATED if created else http.HTTP_200_OK
    return CartRead.model_validate(cart)


@router.get("/carts", response_model=CartPage)
def list_carts(
    principal: Reader,
    session: ReadSession,
    status: CartStatusT | None = None,
    contact_id: int | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> CartPage:
    """Carts, newest first."""
    items, next_cursor = service.list_carts(
        session, principal.workspace_id, status=status, contact_id=contact_id, cursor=cursor, limit=limit
    )
    return CartPage(items=[CartRead.model_validate(c) for c in items], next_cursor=next_cursor)


@router.get("/carts/{external_id}", response_model=CartRead)
def read_cart(
    principal: Reader, session: ReadSession, external_id: Annotated[str, Path(min_length=1, max_length=200)]
) -> CartRead:
    """One cart by the shop's id."""
    return CartRead.model_validate(service.get_cart_by_external_id(session, principal.workspace_id, external_id))
