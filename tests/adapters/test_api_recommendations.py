"""Recommendations over HTTP and the CLI: recompute, per product, per contact, status, permissions, isolation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from suppilo.adapters.cli.common import console
from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings

API = "/api/v1"
BASKETS = [
    ("ann@example.fi", ["tent", "mat"]),
    ("ben@example.fi", ["tent", "mat", "torch"]),
    ("cat@example.fi", ["tent", "mat", "torch"]),
    ("dan@example.fi", ["stove", "pot"]),
    ("eve@example.fi", ["stove", "pot"]),
    ("fay@example.fi", ["tent"]),
]
PRODUCTS = {
    "tent": ("Vaellus 2 tent", "tents", 29900),
    "mat": ("Trail mat", "sleeping", 4990),
    "torch": ("Head torch", "lights", 2500),
    "stove": ("Camp stove", "cooking", 5900),
    "pot": ("Titanium pot", "cooking", 3900),
}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(console, "width", 200)  # whole table rows, not wrapped cells
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _shop(client, ws) -> tuple[dict[str, int], dict[str, int]]:
    products = {}
    for sku, (name, category, price) in PRODUCTS.items():
        body = {
            "sku": sku,
            "name": name,
            "category": category,
            "price_minor": price,
            "currency": "EUR",
            "url": f"https://shop.example.fi/p/{sku}",
        }
        res = client.post(f"{API}/products", json=body, headers=ws.auth("write"))
        assert res.status_code == 201, res.text
        products[sku] = res.json()["id"]
    contacts = {}
    for i, (email, skus) in enumerate(BASKETS):
        order = {
            "external_id": f"R-{i}",
            "email": email,
            "placed_at": f"2026-01-{i + 1:02d}T10:00:00+00:00",
            "currency": "EUR",
            "lines": [{"sku": s} for s in skus],
        }
        res = client.post(f"{API}/orders", json=order, headers=ws.auth("write"))
        assert res.status_code == 201, res.text
        contacts[email] = res.json()["contact_id"]
    return products, contacts


def test_recompute_then_recommend_over_http(client, workspace, other_workspace) -> None:
    products, contacts = _shop(client, workspace)
    assert client.get(f"{API}/recommendations/status", headers=workspace.auth("read")).json()["computed_at"] is None
    assert client.post(f"{API}/recommendations/recompute", headers=workspace.auth("write")).status_code == 403
    res = client.post(f"{API}/recommendations/recompute", headers=workspace.auth("admin"))
    assert res.status_code == 200, res.text
    run = res.json()
    assert (run["orders"], run["lines"], run["customers"]) == (6, 13, 6)
    assert run["together_rules"] > 0 and run["best_sellers"] == 5
    status = client.get(f"{API}/recommendations/status", headers=workspace.auth("read")).json()
    assert status["computed_at"] == run["computed_at"]

    res = client.get(f"{API}/products/{products['tent']}/recommendations", headers=workspace.auth("read"))
    assert res.status_code == 200
    recs = res.json()
    # tent in 4 orders, mat in 3 (always with the tent), torch in 2: N = 6.
    assert [r["sku"] for r in recs if r["kind"] == "together"] == ["mat", "torch"]
    mat = recs[0]
    assert mat["confidence"] == pytest.approx(3 / 4)
    assert mat["support"] == pytest.approx(3 / 6)
    assert mat["lift"] == pytest.approx(3 * 6 / (4 * 3))
    assert mat["orders_together"] == 3 and mat["price_minor"] == 4990 and mat["currency"] == "EUR"

    fay = contacts["fay@example.fi"]
    res = client.get(f"{API}/contacts/{fay}/recommendations?limit=3", headers=workspace.auth("read"))
    picks = res.json()
    assert [(p["sku"], p["reason"]) for p in picks] == [
        ("mat", "bought_together"),
        ("torch", "bought_together"),
        ("stove", "best_seller"),
    ]
    assert set(picks[0]) >= {"name", "url", "price_minor", "currency", "sku", "category", "reason"}

    # Unknown or foreign ids answer 404 with the path; a bad limit 422.
    res = client.get(f"{API}/products/{products['tent']}/recommendations", headers=other_workspace.auth("read"))
    assert (res.status_code, res.json()["error"]["path"]) == (404, "product_id")
    res = client.get(f"{API}/contacts/{fay}/recommendations", headers=other_workspace.auth("read"))
    assert (res.status_code, res.json()["error"]["path"]) == (404, "contact_id")
    assert (
        client.get(f"{API}/contacts/{fay}/recommendations?limit=0", headers=workspace.auth("read")).status_code == 422
    )
    assert client.get(f"{API}/contacts/{fay}/recommendations").status_code == 401


def test_cli_recompute_product_and_contact(cli_env: CliRunner, client, workspace) -> None:
    products, contacts = _shop(client, workspace)
    slug = ["--workspace", workspace.slug]
    res = cli_env.invoke(cli_app, ["recommendations", "recompute", *slug, "--json"])
    assert res.exit_code == 0, res.output
    run = json.loads(res.stdout)
    assert run["lines"] == 13 and run["orders"] == 6

    res = cli_env.invoke(cli_app, ["recommendations", "recompute", *slug])
    assert res.exit_code == 0, res.output
    assert "13 order lines in 6 orders" in res.output

    res = cli_env.invoke(cli_app, ["recommendations", "product", str(products["stove"]), *slug, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows[0]["sku"] == "pot" and rows[0]["confidence"] == pytest.approx(1.0)

    res = cli_env.invoke(cli_app, ["recommendations", "product", str(products["stove"]), *slug])
    assert res.exit_code == 0 and "Titanium pot" in res.output and "39.00 EUR" in res.output

    fay = contacts["fay@example.fi"]
    res = cli_env.invoke(cli_app, ["recommendations", "contact", str(fay), *slug, "--limit", "2"])
    assert res.exit_code == 0, res.output
    assert "Trail mat" in res.output and "bought_together" in res.output

    res = cli_env.invoke(cli_app, ["recommendations", "contact", "999999999", *slug])
    assert res.exit_code == 1 and "contact_id" in res.output
