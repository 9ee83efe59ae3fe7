"""Offers and coupons over HTTP: definitions with field paths, issuing, bulk codes, redemption refusals, isolation."""

from __future__ import annotations

from suppilo.contacts.models import Contact
from suppilo.offers import codes


def _contact(session, ws, email="buyer@example.com") -> int:
    contact = Contact(workspace_id=ws.id, email=email, lifecycle_stage="customer")
    session.add(contact)
    session.commit()
    return contact.id


def _offer(client, ws, **extra):
    body = {"key": "winback", "name": "Win-back 10 %", "kind": "percent", "percent": 10, **extra}
    return client.post("/api/v1/offers", json=body, headers=ws.auth("write"))


def test_offer_crud_and_validation_paths(client, workspace) -> None:
    res = _offer(
        client, workspace, value_rule={"by": "ltv", "tiers": [{"min": 0, "percent": 10}, {"min": -5, "percent": 2}]}
    )
    assert res.status_code == 422
    assert res.json()["error"]["path"] == "value_rule.tiers[1].min"
    res = _offer(client, workspace, kind="fixed", percent=None, amount_minor=500)
    assert (res.status_code, res.json()["error"]["path"]) == (422, "currency")
    res = _offer(
        client, workspace, value_rule={"by": "ltv", "tiers": [{"min": 0, "percent": 10}, {"min": 50000, "percent": 15}]}
    )
    assert res.status_code == 201, res.text
    assert _offer(client, workspace).status_code == 409
    assert client.get("/api/v1/offers", headers=workspace.auth("read")).json()[0]["key"] == "winback"
    res = client.patch("/api/v1/offers/winback", json={"percent": 12}, headers=workspace.auth("write"))
    assert res.json()["percent"] == 12
    assert (
        client.post(
            "/api/v1/offers",
            json={"key": "x", "name": "X", "kind": "percent", "percent": 5},
            headers=workspace.auth("read"),
        ).status_code
        == 403
    )
    assert client.delete("/api/v1/offers/winback", headers=workspace.auth("write")).status_code == 204
    assert client.get("/api/v1/offers/winback", headers=workspace.auth("read")).status_code == 404


def test_issue_redeem_and_refusal_reasons(client, session, workspace, other_workspace) -> None:
    buyer = _contact(session, workspace)
    other = _contact(session, workspace, "other@example.com")
    assert _offer(client, workspace, min_order_minor=3000, valid_days=30).status_code == 201
    body = {"contact_id": buyer, "idempotency_key": "journey:7:3"}
    first = client.post("/api/v1/offers/winback/coupons", json=body, headers=workspace.auth("write"))
    assert first.status_code == 201, first.text
    coupon = first.json()
    again = client.post("/api/v1/offers/winback/coupons", json=body, headers=workspace.auth("write")).json()
    assert again["code"] == coupon["code"] and coupon["display"] == codes.display(coupon["code"])
    assert coupon["percent"] == 10 and coupon["expires_at"] is not None

    def redeem(code: str, **extra):
        payload = {"code": code, "contact_id": buyer, "order_total_minor": 5000, "currency": "EUR", **extra}
        return client.post("/api/v1/coupons/redeem", json=payload, headers=workspace.auth("write"))

    code = coupon["code"]
    typo = code[:-1] + ("2" if code[-1] != "2" else "3")
    for res, reason in (
        (redeem(typo), "bad_checksum"),
        (redeem(code, contact_id=other), "coupon_foreign"),
        (redeem(code, order_total_minor=2999), "minimum_not_met"),
        (redeem(codes.new_code()), "coupon_unknown"),
    ):
        assert (res.status_code, res.json()["error"]["code"], res.json()["error"]["path"]) == (422, reason, "code")
    ok = redeem(coupon["display"].lower())
    assert ok.status_code == 201, ok.text
    assert ok.json()["discount_minor"] == 500
    assert redeem(code).json()["error"]["code"] == "coupon_used"
    detail = client.get(f"/api/v1/coupons/{coupon['display']}", headers=workspace.auth("read")).json()
    assert detail["status"] == "redeemed"
    assert (
        client.get(f"/api/v1/coupons/{code}/redemption", headers=workspace.auth("read")).json()["contact_id"] == buyer
    )
    # another workspace sees nothing
    assert client.get(f"/api/v1/coupons/{code}", headers=other_workspace.auth("read")).status_code == 404
    res = client.post("/api/v1/coupons/redeem", json={"code": code}, headers=other_workspace.auth("write"))
    assert res.json()["error"]["code"] == "coupon_unknown"
    # an offer with coupons cannot be deleted
    assert client.delete("/api/v1/offers/winback", headers=workspace.auth("write")).status_code == 409


def test_bulk_codes_listing_and_void(client, workspace) -> None:
    assert _offer(client, workspace).status_code == 201
    res = client.post(
        "/api/v1/offers/winback/coupons/bulk",
        json={"count": 750, "batch": "flyer-2025"},
        headers=workspace.auth("write"),
    )
    assert res.status_code == 201 and res.json() == {"offer_key": "winback", "batch": "flyer-2025", "count": 750}
    seen: set[str] = set()
    cursor = None
    while True:
        params = {"batch": "flyer-2025", "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/coupons", params=params, headers=workspace.auth("read")).json()
        seen.update(c["code"] for c in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 750 and all(codes.is_valid(c) for c in seen)
    code = sorted(seen)[0]
    assert client.post(f"/api/v1/coupons/{code}/void", headers=workspace.auth("write")).json()["status"] == "void"
    res = client.post("/api/v1/coupons/redeem", json={"code": code}, headers=workspace.auth("write"))
    assert res.json()["error"]["code"] == "coupon_void"
    issued = client.get(
        "/api/v1/coupons", params={"status": "issued", "offer_key": "winback"}, headers=workspace.auth("read")
    ).json()
    assert len(issued["items"]) == 50


def test_an_order_posted_with_a_coupon_redeems_it(client, session, workspace) -> None:
    buyer = _contact(session, workspace)
    assert _offer(client, workspace).status_code == 201
    coupon = client.post(
        "/api/v1/offers/winback/coupons",
        json={"contact_id": buyer, "idempotency_key": "k"},
        headers=workspace.auth("write"),
    ).json()
    order = {
        "external_id": "W-1",
        "contact_id": buyer,
        "placed_at": "2030-01-01T10:00:00+00:00",
        "currency": "EUR",
        "subtotal_minor": 8000,
        "discount_minor": 800,
        "total_minor": 7200,
        "coupon_code": coupon["display"],
    }
    assert client.post("/api/v1/orders", json=order, headers=workspace.auth("write")).status_code == 201
    red = client.get(f"/api/v1/coupons/{coupon['code']}/redemption", headers=workspace.auth("read")).json()
    assert (red["order_total_minor"], red["discount_minor"]) == (8000, 800)
    bad = {**order, "external_id": "W-2", "coupon_code": "NOT-A-CODE"}
    assert client.post("/api/v1/orders", json=bad, headers=workspace.auth("write")).status_code == 201


def test_cli_create_generate_redeem_and_loyalty_balance(
    client, session, workspace, monkeypatch, database_url, db_engine, tmp_path
) -> None:
    import csv
    import json

    from typer.testing import CliRunner

    from suppilo.adapters.cli.main import app as cli_app
    from suppilo.config import get_settings

    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        w = ["--workspace", workspace.slug]
        res = runner.invoke(
            cli_app,
            [
                "offers",
                "create",
                "flyer",
                "--name",
                "Flyer",
                "--kind",
                "fixed",
                "--amount",
                "500",
                "--currency",
                "EUR",
                "--min-order",
                "2000",
                *w,
                "--json",
            ],
        )
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["min_order_currency"] == "EUR"
        res = runner.invoke(cli_app, ["offers", "create", "bad", "--name", "Bad", "--kind", "percent", *w])
        assert res.exit_code == 1 and "percent" in res.output
        target = tmp_path / "codes.csv"
        res = runner.invoke(cli_app, ["offers", "generate", "flyer", "1200", "--out", str(target), *w, "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["count"] == 1200
        with target.open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 1200 and all(codes.is_valid(codes.normalize(r["code"])) for r in rows)
        code = rows[0]["code"]
        res = runner.invoke(cli_app, ["offers", "redeem", code, "--total", "1500", "--currency", "eur", *w])
        assert res.exit_code == 1 and "minimum_not_met" in res.output
        res = runner.invoke(cli_app, ["offers", "redeem", code, "--total", "2500", "--currency", "eur", *w, "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["discount_minor"] == 500
        res = runner.invoke(cli_app, ["offers", "redeem", code, *w])
        assert res.exit_code == 1 and "coupon_used" in res.output
        res = runner.invoke(cli_app, ["offers", "list", *w])
        assert res.exit_code == 0 and "flyer" in res.stdout

        cid = _contact(session, workspace, "cli@example.com")
        award = {"points": 40, "idempotency_key": "cli"}
        client.post(f"/api/v1/loyalty/contacts/{cid}/award", json=award, headers=workspace.auth("write"))
        res = runner.invoke(cli_app, ["loyalty", "balance", str(cid), *w, "--json"])
        assert res.exit_code == 0, res.output
        assert (json.loads(res.stdout)["points"], json.loads(res.stdout)["tier"]) == (40, "member")
        res = runner.invoke(cli_app, ["loyalty", "run", "--json"])
        assert res.exit_code == 0, res.output
    finally:
        get_settings.cache_clear()
