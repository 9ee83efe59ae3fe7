"""API keys: missing, unknown, revoked and under-scoped keys are refused with JSON errors; workspaces are isolated."""

from __future__ import annotations


def test_missing_key_is_401_json(client) -> None:
    res = client.get("/api/v1/workspace")
    assert res.status_code == 401
    body = res.json()["error"]
    assert body["code"] == "unauthorized" and body["path"] == "headers.authorization"


def test_unknown_key_is_401(client) -> None:
    res = client.get("/api/v1/workspace", headers={"Authorization": "Bearer sk_nope"})
    assert res.status_code == 401


def test_scope_is_enforced(client, workspace) -> None:
    assert client.get("/api/v1/workspace", headers=workspace.auth("read")).status_code == 200
    res = client.patch("/api/v1/workspace", json={"name": "New"}, headers=workspace.auth("read"))
    assert res.status_code == 403 and res.json()["error"]["code"] == "forbidden"
    res = client.get("/api/v1/workspace", headers=workspace.auth("track"))
    assert res.status_code == 403


def test_each_key_sees_only_its_workspace(client, workspace, other_workspace) -> None:
    a = client.get("/api/v1/workspace", headers=workspace.auth("read")).json()
    b = client.get("/api/v1/workspace", headers=other_workspace.auth("read")).json()
    assert a["id"] == workspace.id and b["id"] == other_workspace.id


def test_invalid_update_names_the_field(client, workspace) -> None:
    res = client.patch("/api/v1/workspace", json={"currency": "euro"}, headers=workspace.auth("admin"))
    assert res.status_code == 422
    err = res.json()["error"]
    assert err["code"] == "validation_error" and err["path"] == "body.currency"
    res = client.patch("/api/v1/workspace", json={"timezone": "Mars/Base"}, headers=workspace.auth("admin"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "timezone"
    res = client.get("/api/v1/workspace", headers=workspace.auth("read")).json()
    assert res["currency"] == "EUR" and res["timezone"] == "Europe/Helsinki"


def test_revoked_key_stops_working(client, workspace) -> None:
    keys = client.get("/api/v1/api-keys", headers=workspace.auth("admin")).json()
    read_key = next(k for k in keys if k["scopes"] == ["read"])
    assert client.delete(f"/api/v1/api-keys/{read_key['id']}", headers=workspace.auth("admin")).status_code == 200
    assert client.get("/api/v1/workspace", headers=workspace.auth("read")).status_code == 401


def test_foreign_key_id_is_404(client, workspace, other_workspace) -> None:
    keys = client.get("/api/v1/api-keys", headers=other_workspace.auth("admin")).json()
    res = client.delete(f"/api/v1/api-keys/{keys[0]['id']}", headers=workspace.auth("admin"))
    assert res.status_code == 404
    assert len(client.get("/api/v1/api-keys", headers=other_workspace.auth("admin")).json()) == len(keys)
    assert all(
        k["revoked_at"] is None for k in client.get("/api/v1/api-keys", headers=other_workspace.auth("admin")).json()
    )


def test_front_door_leads_to_the_web_interface(client) -> None:
    res = client.get("/", follow_redirects=False)
    assert res.status_code == 307 and res.headers["location"] == "/app/"
    assert client.get("/openapi.json").json()["info"]["title"] == "suppilo"
