"""Merging two contacts over HTTP: the merged id keeps answering with the surviving contact."""

from __future__ import annotations


def test_merge_endpoint(client, workspace) -> None:
    h = workspace.auth("write")
    keep = client.post("/api/v1/contacts", json={"email": "keep@example.com", "tags": ["a"]}, headers=h).json()
    gone = client.post(
        "/api/v1/contacts", json={"first_name": "Gone", "phone": "+358401234567", "tags": ["b"]}, headers=h
    ).json()
    res = client.post(f"/api/v1/contacts/{keep['id']}/merge", json={"other_id": gone["id"]}, headers=h)
    assert res.status_code == 200, res.text
    merged = res.json()
    assert merged["id"] == keep["id"] and merged["first_name"] == "Gone" and merged["tags"] == ["a", "b"]
    assert merged["phone"] == "+358401234567"
    followed = client.get(f"/api/v1/contacts/{gone['id']}", headers=workspace.auth("read")).json()
    assert followed["id"] == keep["id"]
    res = client.post(f"/api/v1/contacts/{keep['id']}/merge", json={"other_id": keep["id"]}, headers=h)
    assert res.status_code == 422 and res.json()["error"]["path"] == "other_id"
    res = client.post(f"/api/v1/contacts/{keep['id']}/merge", json={"other_id": 10**9}, headers=h)
    assert res.status_code == 404 and res.json()["error"]["path"] == "other_id"
    assert (
        client.post(
            f"/api/v1/contacts/{keep['id']}/merge", json={"other_id": gone["id"]}, headers=workspace.auth("read")
        ).status_code
        == 403
    )
