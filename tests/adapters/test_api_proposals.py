"""Proposals over HTTP: totals with a discount computed by the server, the catalogue price as default, a line in
another currency refused with its path, validity in the past refused, accepting sets the deal amount, tenancy."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from suppilo.commerce import service as commerce_service
from suppilo.commerce.schemas import ProductCreate

API = "/api/v1"


def _products(session_factory, ws) -> dict[str, int]:
    out = {}
    with session_factory() as s:
        for sku, price, cur in (("SEAT", 12_000, "EUR"), ("SETUP", 50_000, "EUR"), ("USD-ADDON", 9_900, "USD")):
            p = commerce_service.create_product(
                s, ws.id, ProductCreate(sku=sku, name=f"Product {sku}", price_minor=price, currency=cur)
            )
            out[sku] = p.id
        s.commit()
    return out


def _deal(client, ws):
    res = client.post(
        f"{API}/deals", json={"name": f"Deal {secrets.token_hex(3)}", "currency": "EUR"}, headers=ws.auth("write")
    )
    assert res.status_code == 201, res.text
    return res.json()


def _future(days: int = 30) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


def test_totals_default_price_and_accept(client, workspace, session_factory) -> None:
    ws = workspace
    products = _products(session_factory, ws)
    deal = _deal(client, ws)
    body = {
        "title": "Rollout offer",
        "valid_until": _future(),
        "discount_bp": 1_000,
        "lines": [
            {"sku": "SEAT", "quantity": 5},
            {"product_id": products["SETUP"], "quantity": 1, "unit_price_minor": 40_001},
        ],
    }
    res = client.post(f"{API}/deals/{deal['id']}/proposals", json=body, headers=ws.auth("write"))
    assert res.status_code == 201, res.text
    p = res.json()
    assert p["currency"] == "EUR" and p["status"] == "draft"
    assert [line["unit_price_minor"] for line in p["lines"]] == [12_000, 40_001]
    assert p["subtotal_minor"] == 100_001 and p["discount_minor"] == 10_000 and p["total_minor"] == 90_001

    res = client.patch(
        f"{API}/proposals/{p['id']}", json={"discount_bp": None, "discount_minor": 1}, headers=ws.auth("write")
    )
    assert res.status_code == 200, res.text
    assert res.json()["total_minor"] == 100_000

    listed = client.get(f"{API}/deals/{deal['id']}/proposals", headers=ws.auth("read")).json()
    assert [x["id"] for x in listed] == [p["id"]]

    before = client.get(f"{API}/deals/{deal['id']}", headers=ws.auth("read")).json()
    res = client.post(f"{API}/proposals/{p['id']}/accept", headers=ws.auth("write"))
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "accepted"
    after = client.get(f"{API}/deals/{deal['id']}", headers=ws.auth("read")).json()
    assert after["amount_minor"] == 100_000 and after["currency"] == "EUR"
    assert after["version"] == before["version"] + 1
    res = client.post(f"{API}/proposals/{p['id']}/reject", headers=ws.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "status"


def test_bad_input_refused(client, workspace, session_factory) -> None:
    ws = workspace
    _products(session_factory, ws)
    deal = _deal(client, ws)
    url = f"{API}/deals/{deal['id']}/proposals"
    lines = [{"sku": "SEAT"}, {"sku": "USD-ADDON", "quantity": 2}]
    res = client.post(url, json={"title": "X", "valid_until": _future(), "lines": lines}, headers=ws.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "lines[1].unit_price_minor"
    lines[1]["unit_price_minor"] = 9_000
    today = datetime.now(UTC).date().isoformat()
    res = client.post(url, json={"title": "X", "valid_until": today, "lines": lines}, headers=ws.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "valid_until"
    res = client.post(url, json={"title": "X", "valid_until": _future(), "lines": lines}, headers=ws.auth("write"))
    assert res.status_code == 201 and res.json()["total_minor"] == 12_000 + 18_000
    res = client.post(
        url, json={"title": "X", "valid_until": _future(), "lines": [{"sku": "NOPE"}]}, headers=ws.auth("write")
    )
    assert res.status_code == 404 and res.json()["error"]["path"] == "lines[0].sku"


def test_tenant_isolation(client, workspace, other_workspace, session_factory) -> None:
    mine = _products(session_factory, workspace)
    _products(session_factory, other_workspace)
    deal = _deal(client, workspace)
    res = client.post(
        f"{API}/deals/{deal['id']}/proposals",
        json={"title": "Mine", "valid_until": _future(), "lines": [{"sku": "SEAT"}]},
        headers=workspace.auth("write"),
    )
    pid = res.json()["id"]
    o = other_workspace.auth("write")
    assert client.get(f"{API}/proposals/{pid}", headers=other_workspace.auth("read")).status_code == 404
    assert client.post(f"{API}/proposals/{pid}/accept", headers=o).status_code == 404
    assert client.patch(f"{API}/proposals/{pid}", json={"title": "Y"}, headers=o).status_code == 404
    assert client.get(f"{API}/deals/{deal['id']}/proposals", headers=other_workspace.auth("read")).status_code == 404
    res = client.post(
        f"{API}/deals/{deal['id']}/proposals",
        json={"title": "T", "valid_until": _future(), "lines": [{"sku": "SEAT"}]},
        headers=o,
    )
    assert res.status_code == 404
    theirs = _deal(client, other_workspace)
    res = client.post(
        f"{API}/deals/{theirs['id']}/proposals",
        json={"title": "T", "valid_until": _future(), "lines": [{"product_id": mine["SEAT"]}]},
        headers=o,
    )
    assert res.status_code == 404 and res.json()["error"]["path"] == "lines[0].product_id"
