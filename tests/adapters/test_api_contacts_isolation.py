"""Tenant isolation: every contact, company, property and lifecycle endpoint answers 404 for another workspace's
ids, and nothing of the other workspace changes."""

from __future__ import annotations

import pytest


@pytest.fixture
def foreign(client, other_workspace):
    """Records of the other workspace."""
    w = other_workspace.auth("admin")
    company = client.post("/api/v1/companies", json={"name": "Theirs", "domain": "theirs.example"}, headers=w).json()
    contact = client.post(
        "/api/v1/contacts", json={"email": "them@theirs.example", "first_name": "Them", "tags": ["x"]}, headers=w
    ).json()
    other = client.post("/api/v1/contacts", json={"email": "two@theirs.example"}, headers=w).json()
    prop = client.post(
        "/api/v1/properties", json={"object_type": "contact", "name": "level", "type": "number"}, headers=w
    ).json()
    return {"company": company, "contact": contact, "other": other, "property": prop}


def _snapshot(client, other_workspace, foreign):
    r = other_workspace.auth("admin")
    return {
        "contact": client.get(f"/api/v1/contacts/{foreign['contact']['id']}", headers=r).json(),
        "other": client.get(f"/api/v1/contacts/{foreign['other']['id']}", headers=r).json(),
        "company": client.get(f"/api/v1/companies/{foreign['company']['id']}", headers=r).json(),
        "property": client.get(f"/api/v1/properties/{foreign['property']['id']}", headers=r).json(),
        "history": client.get(f"/api/v1/contacts/{foreign['contact']['id']}/stage-history", headers=r).json(),
    }


def test_foreign_ids_are_404_and_untouched(client, workspace, other_workspace, foreign) -> None:
    before = _snapshot(client, other_workspace, foreign)
    mine = client.post("/api/v1/contacts", json={"email": "me@mine.example"}, headers=workspace.auth("write")).json()
    cid, coid, pid = foreign["contact"]["id"], foreign["company"]["id"], foreign["property"]["id"]
    calls = [
        ("GET", f"/api/v1/contacts/{cid}", None),
        ("PATCH", f"/api/v1/contacts/{cid}", {"first_name": "Hacked"}),
        ("DELETE", f"/api/v1/contacts/{cid}", None),
        ("GET", f"/api/v1/contacts/{cid}/tags", None),
        ("PUT", f"/api/v1/contacts/{cid}/tags", {"tags": ["pwned"]}),
        ("POST", f"/api/v1/contacts/{cid}/tags", {"tags": ["pwned"]}),
        ("DELETE", f"/api/v1/contacts/{cid}/tags/x", None),
        ("GET", f"/api/v1/contacts/{cid}/timeline", None),
        ("POST", f"/api/v1/contacts/{cid}/stage", {"stage": "customer"}),
        ("GET", f"/api/v1/contacts/{cid}/stage-history", None),
        ("POST", f"/api/v1/contacts/{cid}/merge", {"other_id": mine["id"]}),
        ("POST", f"/api/v1/contacts/{mine['id']}/merge", {"other_id": cid}),
        ("GET", f"/api/v1/companies/{coid}", None),
        ("PATCH", f"/api/v1/companies/{coid}", {"name": "Hacked"}),
        ("DELETE", f"/api/v1/companies/{coid}", None),
        ("GET", f"/api/v1/companies/{coid}/contacts", None),
        ("GET", f"/api/v1/properties/{pid}", None),
        ("PATCH", f"/api/v1/properties/{pid}", {"label": "Hacked"}),
        ("DELETE", f"/api/v1/properties/{pid}", None),
    ]
    for method, url, body in calls:
        res = client.request(method, url, json=body, headers=workspace.auth("admin"))
        assert res.status_code == 404, (method, url, res.status_code, res.text)
        assert res.json()["error"]["code"] == "not_found"
    # Foreign ids in bodies are refused as invalid references, and never linked.
    res = client.patch(f"/api/v1/contacts/{mine['id']}", json={"company_id": coid}, headers=workspace.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "company_id"
    assert client.get(f"/api/v1/contacts/{mine['id']}", headers=workspace.auth("read")).json()["company_id"] != coid
    # Lists never show the other workspace's records.
    r = workspace.auth("read")
    assert client.get("/api/v1/contacts", params={"q": "them"}, headers=r).json()["items"] == []
    assert client.get("/api/v1/contacts", params={"company_id": coid}, headers=r).json()["items"] == []
    assert client.get("/api/v1/companies", params={"domain": "theirs.example"}, headers=r).json()["items"] == []
    assert client.get("/api/v1/properties", headers=r).json() == []
    assert _snapshot(client, other_workspace, foreign) == before
    assert client.get(f"/api/v1/contacts/{cid}/tags", headers=other_workspace.auth("read")).json() == ["x"]


def test_same_email_in_two_workspaces_is_fine(client, workspace, other_workspace, foreign) -> None:
    res = client.post("/api/v1/contacts", json={"email": "them@theirs.example"}, headers=workspace.auth("write"))
    assert res.status_code == 201
    assert res.json()["company_id"] != foreign["company"]["id"]
