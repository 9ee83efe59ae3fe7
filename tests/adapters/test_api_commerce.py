"""Commerce over HTTP: products, idempotent orders with validated totals, refunds, carts, lifecycle, isolation."""

from __future__ import annotations

from sqlalchemy import select

from suppilo.contacts.models import Contact, StageChange
from suppilo.events.models import Event

T1 = "2024-05-01T10:00:00+00:00"
T2 = "2024-06-01T10:00:00+00:00"


def _product(client, ws, sku="TEA-1", **extra):
    body = {"sku": sku, "name": "Green tea", "category": "tea", "price_minor": 1250, "currency": "EUR", **extra}
    res = client.post("/api/v1/products", json=body, headers=ws.auth("write"))
    assert res.status_code == 201, res.text
    return res.json()


def _order(client, ws, external_id="A-1", **extra):
    body = {
        "external_id": external_id,
        "placed_at": T1,
        "currency": "EUR",
        "lines": [{"sku": "TEA-1", "quantity": 2}, {"sku": "MUG-9", "name": "Mug", "unit_price_minor": 900}],
        "tax_minor": 500,
        "shipping_minor": 400,
        "discount_minor": 100,
        **extra,
    }
    return client.post("/api/v1/orders", json=body, headers=ws.auth("write"))


def _contact(session, ws, email="buyer@example.com", stage="interest") -> int:
    contact = Contact(workspace_id=ws.id, email=email, lifecycle_stage=stage)
    session.add(contact)
    session.commit()
    return contact.id


# --- products -----------------------------------------------------------------------------------------------------


def test_product_crud_and_unique_sku(client, workspace) -> None:
    p = _product(client, workspace, currency="jpy", price_minor=1500)
    assert p["currency"] == "JPY" and p["price_minor"] == 1500
    res = client.post(
        "/api/v1/products",
        json={"sku": "TEA-1", "name": "Dup", "price_minor": 1, "currency": "EUR"},
        headers=workspace.auth("write"),
    )
    assert res.status_code == 409 and res.json()["error"]["path"] == "sku"
    res = client.patch(f"/api/v1/products/{p['id']}", json={"name": "Sencha"}, headers=workspace.auth("write"))
    assert res.status_code == 200 and res.json()["name"] == "Sencha"
    other = _product(client, workspace, sku="TEA-2")
    res = client.patch(f"/api/v1/products/{other['id']}", json={"sku": "TEA-1"}, headers=workspace.auth("write"))
    assert res.status_code == 409 and res.json()["error"]["path"] == "sku"
    assert client.delete(f"/api/v1/products/{p['id']}", headers=workspace.auth("write")).status_code == 204
    assert client.get(f"/api/v1/products/{p['id']}", headers=workspace.auth("read")).status_code == 404


def test_product_currency_must_be_iso_4217(client, workspace) -> None:
    res = client.post(
        "/api/v1/products",
        json={"sku": "X", "name": "X", "price_minor": 1, "currency": "EUX"},
        headers=workspace.auth("write"),
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "body.currency"
    res = client.post(
        "/api/v1/products",
        json={"sku": "X", "name": "X", "price_minor": -1, "currency": "EUR"},
        headers=workspace.auth("write"),
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "body.price_minor"


def test_product_list_filters_and_cursor(client, workspace) -> None:
    for i in range(5):
        _product(client, workspace, sku=f"TEA-{i}", name=f"Tea {i}", category="tea")
    _product(client, workspace, sku="MUG-1", name="Big mug", category="mugs")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"category": "tea", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/products", params=params, headers=workspace.auth("read")).json()
        seen += [p["sku"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"TEA-{i}" for i in range(5)]
    by_name = client.get("/api/v1/products", params={"q": "big"}, headers=workspace.auth("read")).json()
    assert [p["sku"] for p in by_name["items"]] == ["MUG-1"]
    by_sku = client.get("/api/v1/products", params={"q": "tea-3"}, headers=workspace.auth("read")).json()
    assert [p["sku"] for p in by_sku["items"]] == ["TEA-3"]
    res = client.get("/api/v1/products", params={"cursor": "garbage"}, headers=workspace.auth("read"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "cursor"


# --- orders -------------------------------------------------------------------------------------------------------


def test_order_upsert_is_idempotent_and_links_products(client, workspace, session) -> None:
    product = _product(client, workspace)
    first = _order(client, workspace)
    assert first.status_code == 201, first.text
    again = _order(client, workspace)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    order = again.json()
    # subtotal = 2 × 1250 + 900; total = subtotal − 100 + 500 + 400
    assert (order["subtotal_minor"], order["total_minor"], order["status"]) == (3400, 4200, "completed")
    assert [(ln["sku"], ln["product_id"], ln["name"], ln["unit_price_minor"]) for ln in order["lines"]] == [
        ("TEA-1", product["id"], "Green tea", 1250),
        ("MUG-9", None, "Mug", 900),
    ]
    listed = client.get("/api/v1/orders", headers=workspace.auth("read")).json()
    assert [o["id"] for o in listed["items"]] == [order["id"]]
    # The update path changes the stored order, keeping its id.
    changed = _order(client, workspace, lines=[{"sku": "MUG-9", "unit_price_minor": 900}], discount_minor=0)
    assert changed.status_code == 200 and changed.json()["id"] == order["id"]
    assert changed.json()["total_minor"] == 1800 and len(changed.json()["lines"]) == 1
    events = session.scalars(
        select(Event).where(Event.workspace_id == workspace.id, Event.name == "Order Completed")
    ).all()
    assert [e.message_id for e in events] == [f"order:{order['id']}"]
    assert events[0].properties["total"] == 42.0 and events[0].properties["currency"] == "EUR"


def test_order_totals_are_validated_with_paths(client, workspace) -> None:
    _product(client, workspace)
    res = _order(client, workspace, subtotal_minor=3000)
    assert res.status_code == 422 and res.json()["error"]["path"] == "subtotal_minor"
    res = _order(client, workspace, total_minor=9999)
    assert res.status_code == 422 and res.json()["error"]["path"] == "total_minor"
    assert "4200" in res.json()["error"]["message"]
    res = _order(client, workspace, lines=[{"sku": "UNKNOWN"}])
    assert res.status_code == 422 and res.json()["error"]["path"] == "lines[0].unit_price_minor"
    res = _order(client, workspace, currency="SEK")  # TEA-1 is priced in EUR and no unit price is given
    assert res.status_code == 422 and res.json()["error"]["path"] == "lines[0].unit_price_minor"
    res = _order(client, workspace, placed_at="2024-05-01T10:00:00")
    assert res.status_code == 422 and res.json()["error"]["path"] == "body.placed_at"
    res = _order(client, workspace, lines=[{"sku": "X", "unit_price_minor": 5, "quantity": 0}])
    assert res.status_code == 422 and res.json()["error"]["path"] == "body.lines[0].quantity"
    res = _order(client, workspace, lines=[], tax_minor=None, shipping_minor=None, discount_minor=None)
    assert res.status_code == 422 and res.json()["error"]["path"] == "total_minor"
    assert client.get("/api/v1/orders", headers=workspace.auth("read")).json()["items"] == []
    # Parts that agree are accepted; a total alone is accepted as it is.
    ok = _order(client, workspace, subtotal_minor=3400, total_minor=4200)
    assert ok.status_code == 201
    ok = _order(
        client, workspace, "A-2", lines=[], tax_minor=None, shipping_minor=None, discount_minor=None, total_minor=77
    )
    assert ok.status_code == 201 and ok.json()["total_minor"] == 77


def test_order_by_email_creates_or_finds_the_contact(client, workspace, session) -> None:
    _product(client, workspace)
    a = _order(client, workspace, "E-1", email="New.Buyer@Example.com").json()
    b = _order(client, workspace, "E-2", email="new.buyer@example.com").json()
    assert a["contact_id"] is not None and a["contact_id"] == b["contact_id"]
    contact = session.get(Contact, a["contact_id"])
    assert contact.email == "new.buyer@example.com" and contact.workspace_id == workspace.id
    session.rollback()  # release the SQLite write lock before the next request
    res = _order(client, workspace, "E-3", email="not an email")
    assert res.status_code == 422 and res.json()["error"]["path"] == "email"
    res = _order(client, workspace, "E-4", contact_id=10**9)
    assert res.status_code == 404 and res.json()["error"]["path"] == "contact_id"


def test_first_and_repeat_order_move_the_lifecycle(client, workspace, session) -> None:
    _product(client, workspace)
    cid = _contact(session, workspace)
    first = _order(client, workspace, "L-1", contact_id=cid).json()
    second = _order(client, workspace, "L-2", contact_id=cid, placed_at=T2).json()
    _order(client, workspace, "L-2", contact_id=cid, placed_at=T2)  # replay moves nothing
    session.expire_all()
    changes = session.scalars(
        select(StageChange).where(StageChange.contact_id == cid).order_by(StageChange.changed_at)
    ).all()
    assert [(c.from_stage, c.to_stage, c.changed_at.isoformat()) for c in changes] == [
        ("interest", "customer", T1),
        ("customer", "loyal", T2),
    ]
    assert "first_order" in changes[0].reason and f"order {first['id']}" in changes[0].reason
    assert "repeat_order" in changes[1].reason and f"order {second['id']}" in changes[1].reason
    assert session.get(Contact, cid).lifecycle_stage == "loyal"


def test_order_filters_and_cursor(client, workspace, session) -> None:
    cid = _contact(session, workspace)
    for i in range(5):
        res = client.post(
            "/api/v1/orders",
            json={
                "external_id": f"F-{i}",
                "placed_at": f"2024-01-0{i + 1}T00:00:00+00:00",
                "currency": "EUR",
                "total_minor": 100 * (i + 1),
                "contact_id": cid if i % 2 == 0 else None,
            },
            headers=workspace.auth("write"),
        )
        assert res.status_code == 201
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/orders", params=params, headers=workspace.auth("read")).json()
        ids += [o["external_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids == ["F-4", "F-3", "F-2", "F-1", "F-0"]
    mine = client.get("/api/v1/orders", params={"contact_id": cid}, headers=workspace.auth("read")).json()
    assert [o["external_id"] for o in mine["items"]] == ["F-4", "F-2", "F-0"]
    window = client.get(
        "/api/v1/orders",
        params={"placed_after": "2024-01-02T00:00:00Z", "placed_before": "2024-01-04T00:00:00Z"},
        headers=workspace.auth("read"),
    ).json()
    assert [o["external_id"] for o in window["items"]] == ["F-2", "F-1"]
    res = client.get("/api/v1/orders", params={"status": "bogus"}, headers=workspace.auth("read"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "query.status"


def test_contact_totals_are_per_currency(client, workspace, session) -> None:
    cid = _contact(session, workspace)
    for ext, cur, total in (("S-1", "EUR", 1000), ("S-2", "EUR", 500), ("S-3", "JPY", 3000)):
        body = {"external_id": ext, "placed_at": T1, "currency": cur, "total_minor": total, "contact_id": cid}
        assert client.post("/api/v1/orders", json=body, headers=workspace.auth("write")).status_code == 201
    summary = client.get("/api/v1/orders/summary", params={"contact_id": cid}, headers=workspace.auth("read")).json()
    assert [(r["currency"], r["orders"], r["total_minor"]) for r in summary["by_currency"]] == [
        ("EUR", 2, 1500),
        ("JPY", 1, 3000),
    ]


# --- refunds ------------------------------------------------------------------------------------------------------


def test_refunds_partial_replay_over_and_full(client, workspace) -> None:
    _product(client, workspace)
    order = _order(client, workspace).json()
    url = f"/api/v1/orders/{order['id']}/refunds"
    h = workspace.auth("write")
    r1 = client.post(url, json={"external_id": "R-1", "amount_minor": 1000, "reason": "broken mug"}, headers=h)
    assert r1.status_code == 201 and r1.json()["currency"] == "EUR"
    replay = client.post(url, json={"external_id": "R-1", "amount_minor": 1000}, headers=h)
    assert replay.status_code == 200 and replay.json()["id"] == r1.json()["id"]
    clash = client.post(url, json={"external_id": "R-1", "amount_minor": 5}, headers=h)
    assert clash.status_code == 409 and clash.json()["error"]["path"] == "external_id"
    got = client.get(f"/api/v1/orders/{order['id']}", headers=workspace.auth("read")).json()
    assert (got["refunded_minor"], got["status"]) == (1000, "partially_refunded")
    over = client.post(url, json={"external_id": "R-2", "amount_minor": 3201}, headers=h)
    assert over.status_code == 422 and over.json()["error"]["path"] == "amount_minor"
    rest = client.post(url, json={"external_id": "R-3"}, headers=h)
    assert rest.status_code == 201 and rest.json()["amount_minor"] == 3200
    got = client.get(f"/api/v1/orders/{order['id']}", headers=workspace.auth("read")).json()
    assert (got["refunded_minor"], got["status"]) == (4200, "refunded")
    more = client.post(url, json={"external_id": "R-4", "amount_minor": 1}, headers=h)
    assert more.status_code == 422 and more.json()["error"]["code"] == "over_refund"
    listed = client.get(url, headers=workspace.auth("read")).json()
    assert [r["amount_minor"] for r in listed] == [1000, 3200]
    # Upserting the order again keeps what was refunded.
    assert _order(client, workspace).json()["status"] == "refunded"


# --- carts --------------------------------------------------------------------------------------------------------


def test_cart_put_list_and_conversion_by_order(client, workspace) -> None:
    _product(client, workspace)
    h = workspace.auth("write")
    body = {"currency": "EUR", "email": "cart@example.com", "lines": [{"sku": "TEA-1", "quantity": 3}]}
    created = client.put("/api/v1/carts/cart-77", json=body, headers=h)
    assert created.status_code == 201 and created.json()["value_minor"] == 3750
    replaced = client.put("/api/v1/carts/cart-77", json={**body, "lines": [{"sku": "TEA-1"}]}, headers=h)
    assert replaced.status_code == 200 and replaced.json()["id"] == created.json()["id"]
    assert replaced.json()["value_minor"] == 1250
    bad = client.put("/api/v1/carts/cart-78", json={**body, "value_minor": 1}, headers=h)
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "value_minor"
    res = _order(client, workspace, "C-1", properties={"cart_id": "cart-77"}, lines=[{"sku": "TEA-1"}])
    assert res.status_code == 201
    cart = client.get("/api/v1/carts/cart-77", headers=workspace.auth("read")).json()
    assert cart["status"] == "converted" and cart["order_id"] == res.json()["id"]
    converted = client.get("/api/v1/carts", params={"status": "converted"}, headers=workspace.auth("read")).json()
    assert [c["external_id"] for c in converted["items"]] == ["cart-77"]
    assert client.get("/api/v1/carts", params={"status": "open"}, headers=workspace.auth("read")).json()["items"] == []
    again = client.put("/api/v1/carts/cart-77", json=body, headers=h)
    assert again.status_code == 409


# --- isolation ----------------------------------------------------------------------------------------------------


def test_other_workspaces_ids_are_404_and_nothing_changes(client, workspace, other_workspace) -> None:
    product = _product(client, workspace)
    order = _order(client, workspace).json()
    _product(client, other_workspace)
    h = other_workspace.auth("write")
    assert client.get(f"/api/v1/products/{product['id']}", headers=h).status_code == 404
    assert client.patch(f"/api/v1/products/{product['id']}", json={"name": "x"}, headers=h).status_code == 404
    assert client.delete(f"/api/v1/products/{product['id']}", headers=h).status_code == 404
    assert client.get(f"/api/v1/orders/{order['id']}", headers=h).status_code == 404
    assert client.post(f"/api/v1/orders/{order['id']}/cancel", headers=h).status_code == 404
    res = client.post(f"/api/v1/orders/{order['id']}/refunds", json={"external_id": "X"}, headers=h)
    assert res.status_code == 404 and res.json()["error"]["path"] == "order_id"
    assert client.get("/api/v1/orders", headers=h).json()["items"] == []
    mine = client.get(f"/api/v1/orders/{order['id']}", headers=workspace.auth("read")).json()
    assert (mine["status"], mine["refunded_minor"]) == ("completed", 0)
    assert client.get(f"/api/v1/products/{product['id']}", headers=workspace.auth("read")).json()["name"] == "Green tea"
    # Their key cannot attach an order or a cart to my contact, nor read my carts.
    my_contact = _order(client, workspace, "ISO-C", email="iso@example.com").json()["contact_id"]
    res = _order(client, other_workspace, "ISO-1", contact_id=my_contact)
    assert res.status_code == 404 and res.json()["error"]["path"] == "contact_id"
    res = client.put("/api/v1/carts/iso-cart", json={"currency": "EUR", "contact_id": my_contact}, headers=h)
    assert res.status_code == 404
    client.put("/api/v1/carts/mine", json={"currency": "EUR"}, headers=workspace.auth("write"))
    assert client.get("/api/v1/carts/mine", headers=h).status_code == 404
    res = client.get("/api/v1/orders/summary", params={"contact_id": my_contact}, headers=h)
    assert res.status_code == 404
    # The same external id in another workspace is another order.
    theirs = _order(client, other_workspace)
    assert theirs.status_code == 201 and theirs.json()["id"] != order["id"]


def test_read_key_cannot_write(client, workspace) -> None:
    res = client.post(
        "/api/v1/products",
        json={"sku": "X", "name": "X", "price_minor": 1, "currency": "EUR"},
        headers=workspace.auth("read"),
    )
    assert res.status_code == 403
