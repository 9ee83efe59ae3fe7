"""Segment e-commerce (spec v2) events become orders, refunds and carts with integer minor units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from suppilo.commerce import service
from suppilo.commerce.models import Cart, Order, OrderLine, Refund
from suppilo.contacts.models import Contact, StageChange
from suppilo.errors import DomainError

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _contact(session, workspace_id: int, email: str) -> int:
    contact = Contact(workspace_id=workspace_id, email=email, lifecycle_stage="interest")
    session.add(contact)
    session.flush()
    return contact.id


def _order(session, workspace_id: int, external_id: str) -> Order:
    return session.scalar(select(Order).where(Order.workspace_id == workspace_id, Order.external_id == external_id))


ORDER_EUR = {
    "order_id": "50314b8e9bcf000000000000",
    "total": 27.50,
    "subtotal": 22.5,
    "shipping": 3,
    "tax": 2,
    "discount": "0",
    "coupon": "hasbros",
    "currency": "eur",
    "products": [
        {
            "product_id": "507f1f77bcf86cd799439011",
            "sku": "45790-32",
            "name": "Monopoly",
            "price": 19.99,
            "quantity": 1,
        },
        {"sku": "46493-32", "name": "Uno Card Game", "price": "2.51", "quantity": 1, "category": "Games"},
    ],
}


def test_order_completed_eur_in_minor_units_and_replay_is_one_order(session, workspace) -> None:
    cid = _contact(session, workspace.id, "ann@example.com")
    service.apply_ecommerce_event(session, workspace.id, cid, "Order Completed", ORDER_EUR, T0, "m-1")
    service.apply_ecommerce_event(session, workspace.id, cid, "Order Completed", ORDER_EUR, T0, "m-1-replay")
    session.commit()
    orders = session.scalars(select(Order).where(Order.workspace_id == workspace.id)).all()
    assert len(orders) == 1
    order = orders[0]
    assert (order.currency, order.total_minor, order.subtotal_minor, order.shipping_minor, order.tax_minor) == (
        "EUR",
        2750,
        2250,
        300,
        200,
    )
    assert order.coupon_code == "hasbros" and order.contact_id == cid and order.placed_at == T0
    lines = session.scalars(select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.id)).all()
    assert [(ln.sku, ln.unit_price_minor, ln.quantity, ln.category) for ln in lines] == [
        ("45790-32", 1999, 1, None),
        ("46493-32", 251, 1, "Games"),
    ]
    # The contact became a customer once, at the order's time, with the order named in the reason.
    changes = session.scalars(select(StageChange).where(StageChange.contact_id == cid)).all()
    assert [(c.from_stage, c.to_stage, c.changed_at) for c in changes] == [("interest", "customer", T0)]
    assert f"order {order.id}" in changes[0].reason


def test_order_completed_jpy_has_no_minor_digits(session, workspace) -> None:
    props = {
        "order_id": "jp-1",
        "revenue": 1500,
        "currency": "JPY",
        "products": [{"sku": "tea", "price": 750, "quantity": 2}],
    }
    service.apply_ecommerce_event(session, workspace.id, None, "Order Completed", props, T0, "m-jp")
    order = _order(session, workspace.id, "jp-1")
    assert (order.currency, order.total_minor, order.subtotal_minor) == ("JPY", 1500, 1500)
    assert session.scalar(select(OrderLine.unit_price_minor).where(OrderLine.order_id == order.id)) == 750


def test_order_completed_without_currency_uses_the_workspace_currency(session, workspace) -> None:
    service.apply_ecommerce_event(
        session, workspace.id, None, "Order Completed", {"order_id": "x", "total": 10.1}, T0, "m"
    )
    order = _order(session, workspace.id, "x")
    assert (order.currency, order.total_minor) == ("EUR", 1010)


@pytest.mark.parametrize(
    ("props", "path"),
    [
        ({"total": 10, "currency": "EUR"}, "properties.order_id"),
        ({"order_id": "a", "total": 10, "currency": "ZZZ"}, "properties.currency"),
        ({"order_id": "a", "total": "ten", "currency": "EUR"}, "properties.total"),
        ({"order_id": "a", "products": [{"name": "no sku", "price": 1}]}, "properties.products[0].sku"),
        ({"order_id": "a", "products": [{"sku": "s", "price": 1, "quantity": 0}]}, "properties.products[0].quantity"),
    ],
)
def test_unusable_order_events_name_the_property(session, workspace, props, path) -> None:
    with pytest.raises(DomainError) as err:
        service.apply_ecommerce_event(session, workspace.id, None, "Order Completed", props, T0, "m")
    assert err.value.field == path
    assert session.scalar(select(Order.id).where(Order.workspace_id == workspace.id)) is None


def test_order_refunded_partial_by_products_full_and_replay(session, workspace) -> None:
    service.apply_ecommerce_event(session, workspace.id, None, "Order Completed", ORDER_EUR, T0, "m-1")
    oid = ORDER_EUR["order_id"]
    later = T0 + timedelta(days=2)
    partial = {"order_id": oid, "products": [{"sku": "46493-32", "quantity": 1}]}
    service.apply_ecommerce_event(session, workspace.id, None, "Order Refunded", partial, later, "r-1")
    service.apply_ecommerce_event(session, workspace.id, None, "Order Refunded", partial, later, "r-1")
    order = _order(session, workspace.id, oid)
    assert (order.refunded_minor, order.status) == (251, "partially_refunded")
    with pytest.raises(DomainError) as err:
        service.apply_ecommerce_event(
            session, workspace.id, None, "Order Refunded", {"order_id": oid, "total": 100}, later, "r-2"
        )
    assert err.value.field == "properties.total" and err.value.code == "over_refund"
    service.apply_ecommerce_event(session, workspace.id, None, "Order Refunded", {"order_id": oid}, later, "r-3")
    assert (order.refunded_minor, order.status) == (2750, "refunded")
    amounts = session.scalars(select(Refund.amount_minor).where(Refund.order_id == order.id).order_by(Refund.id))
    assert list(amounts) == [251, 2499]


def test_refund_or_cancel_of_unknown_order_names_order_id(session, workspace) -> None:
    for name in ("Order Refunded", "Order Cancelled"):
        with pytest.raises(DomainError) as err:
            service.apply_ecommerce_event(session, workspace.id, None, name, {"order_id": "nope"}, T0, "m")
        assert err.value.field == "properties.order_id"


def test_order_cancelled(session, workspace) -> None:
    service.apply_ecommerce_event(session, workspace.id, None, "Order Completed", ORDER_EUR, T0, "m-1")
    service.apply_ecommerce_event(
        session, workspace.id, None, "Order Cancelled", {"order_id": ORDER_EUR["order_id"]}, T0, "m-2"
    )
    assert _order(session, workspace.id, ORDER_EUR["order_id"]).status == "cancelled"


def test_cart_events_build_the_cart_and_the_order_converts_it(session, workspace) -> None:
    cid = _contact(session, workspace.id, "cart@example.com")
    add = {"cart_id": "c-9", "sku": "45790-32", "name": "Monopoly", "price": 19.99, "quantity": 1, "currency": "EUR"}
    service.apply_ecommerce_event(session, workspace.id, cid, "Product Added", add, T0, "a-1")
    service.apply_ecommerce_event(session, workspace.id, cid, "Product Added", add, T0, "a-1")  # replay
    service.apply_ecommerce_event(
        session, workspace.id, cid, "Product Added", {**add, "quantity": 2}, T0 + timedelta(minutes=1), "a-2"
    )
    service.apply_ecommerce_event(
        session,
        workspace.id,
        cid,
        "Product Removed",
        {"cart_id": "c-9", "sku": "45790-32", "quantity": 1},
        T0 + timedelta(minutes=2),
        "a-3",
    )
    cart = session.scalar(select(Cart).where(Cart.workspace_id == workspace.id, Cart.external_id == "c-9"))
    assert cart.status == "open" and cart.contact_id == cid
    assert [(ln["sku"], ln["quantity"], ln["unit_price_minor"]) for ln in cart.lines] == [("45790-32", 2, 1999)]
    assert cart.value_minor == 3998 and cart.last_activity_at == T0 + timedelta(minutes=2)
    service.apply_ecommerce_event(
        session,
        workspace.id,
        cid,
        "Order Completed",
        {"order_id": "o-9", "cart_id": "c-9", "total": 39.98, "currency": "EUR"},
        T0 + timedelta(minutes=5),
        "o-9",
    )
    assert cart.status == "converted" and cart.order_id == _order(session, workspace.id, "o-9").id


def test_cart_event_without_cart_id_uses_the_contacts_open_cart(session, workspace) -> None:
    cid = _contact(session, workspace.id, "nocart@example.com")
    viewed = {"products": [{"sku": "a", "price": 5, "quantity": 2}], "currency": "JPY"}
    service.apply_ecommerce_event(session, workspace.id, cid, "Cart Viewed", viewed, T0, "v-1")
    service.apply_ecommerce_event(
        session, workspace.id, cid, "Checkout Started", {"products": [{"sku": "b", "price": 7}]}, T0, "v-2"
    )
    carts = session.scalars(select(Cart).where(Cart.workspace_id == workspace.id)).all()
    assert len(carts) == 1
    assert (carts[0].currency, carts[0].value_minor, [ln["sku"] for ln in carts[0].lines]) == ("JPY", 7, ["b"])
    with pytest.raises(DomainError) as err:
        service.apply_ecommerce_event(session, workspace.id, None, "Product Added", {"sku": "a", "price": 1}, T0, "v-3")
    assert err.value.field == "properties.cart_id"


def test_other_event_names_are_ignored(session, workspace) -> None:
    assert "Order Completed" in service.ECOMMERCE_EVENTS and "Signed Up" not in service.ECOMMERCE_EVENTS
    service.apply_ecommerce_event(session, workspace.id, None, "Signed Up", {"order_id": "z", "total": 1}, T0, "m")
    assert _order(session, workspace.id, "z") is None
