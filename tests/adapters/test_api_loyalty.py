"""Loyalty over HTTP: the programme, earning from orders, awards, redemptions for coupons, tiers, isolation."""

from __future__ import annotations

from suppilo.contacts.models import Contact


def _contact(session, ws, email="member@example.com") -> int:
    contact = Contact(workspace_id=ws.id, email=email, lifecycle_stage="customer")
    session.add(contact)
    session.commit()
    return contact.id


def _program(client, ws, **extra):
    body = {
        "points_per_unit": "1",
        "tiers": [
            {"key": "member", "name": "Member", "min": 0},
            {"key": "silver", "name": "Silver", "min": 200, "perks": ["free shipping"]},
        ],
        "bonus_events": {"review": 25},
        "rewards": [{"key": "five", "name": "5 € off", "points": 100, "offer_key": "five-off"}],
        **extra,
    }
    return client.put("/api/v1/loyalty/program", json=body, headers=ws.auth("admin"))


def test_programme_earning_awards_redemption_and_tiers(client, session, workspace, other_workspace) -> None:
    assert client.get("/api/v1/loyalty/program", headers=workspace.auth("read")).json()["enabled"] is False
    res = _program(client, workspace)
    assert (res.status_code, res.json()["error"]["path"]) == (404, "rewards[0].offer_key")
    offer = {"key": "five-off", "name": "5 €", "kind": "fixed", "amount_minor": 500, "currency": "EUR"}
    assert client.post("/api/v1/offers", json=offer, headers=workspace.auth("write")).status_code == 201
    assert _program(client, workspace, tiers=[{"key": "a", "name": "A", "min": 10}]).status_code == 422
    assert _program(client, workspace).status_code == 200
    assert _program(client, workspace, enabled=True).json()["enabled"] is True
    assert client.put("/api/v1/loyalty/program", json={}, headers=workspace.auth("write")).status_code == 403

    cid = _contact(session, workspace)
    order = {
        "external_id": "L-1",
        "contact_id": cid,
        "placed_at": "2030-01-01T10:00:00+00:00",
        "currency": "EUR",
        "total_minor": 15099,
    }
    assert client.post("/api/v1/orders", json=order, headers=workspace.auth("write")).status_code == 201
    url = f"/api/v1/loyalty/contacts/{cid}"
    view = client.get(url, headers=workspace.auth("read")).json()
    assert (view["points"], view["tier"], view["next_tier"], view["to_next_tier"]) == (150, "member", "silver", 50)

    award = {"event": "review", "idempotency_key": "review:1"}
    assert client.post(f"{url}/award", json=award, headers=workspace.auth("write")).json()["points"] == 25
    assert client.post(f"{url}/award", json=award, headers=workspace.auth("write")).status_code == 200
    res = client.post(
        f"{url}/award", json={"points": 30, "idempotency_key": "goodwill"}, headers=workspace.auth("write")
    )
    assert res.status_code == 200
    view = client.get(url, headers=workspace.auth("read")).json()
    assert (view["points"], view["tier"], view["perks"]) == (205, "silver", ["free shipping"])

    res = client.post(
        f"{url}/redeem", json={"reward": "five", "idempotency_key": "r1"}, headers=workspace.auth("write")
    )
    assert res.status_code == 200, res.text
    assert res.json()["entry"]["points"] == -100 and res.json()["coupon"]["amount_minor"] == 500
    assert res.json()["coupon"]["contact_id"] == cid
    res = client.post(f"{url}/redeem", json={"points": 106, "idempotency_key": "r2"}, headers=workspace.auth("write"))
    assert (res.status_code, res.json()["error"]["code"]) == (422, "insufficient_points")
    assert client.get(url, headers=workspace.auth("read")).json()["points"] == 105

    ledger = client.get(f"{url}/ledger", params={"limit": 2}, headers=workspace.auth("read")).json()
    assert [e["kind"] for e in ledger["items"]] == ["redeem", "bonus"] and ledger["next_cursor"]
    rest = client.get(f"{url}/ledger", params={"cursor": ledger["next_cursor"]}, headers=workspace.auth("read")).json()
    assert [e["kind"] for e in rest["items"]] == ["bonus", "earn"]
    tiers = client.get("/api/v1/loyalty/tiers", headers=workspace.auth("read")).json()
    assert {t["key"]: t["contacts"] for t in tiers} == {"member": 0, "silver": 1}
    assert client.post("/api/v1/loyalty/run", headers=workspace.auth("admin")).json()["tier_changes"] == 0
    # another workspace's key cannot see or touch this contact
    assert client.get(url, headers=other_workspace.auth("read")).status_code == 404
    res = client.post(f"{url}/award", json={"points": 5, "idempotency_key": "x"}, headers=other_workspace.auth("write"))
    assert res.status_code == 404
