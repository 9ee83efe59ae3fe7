"""Templates over HTTP: CRUD with variants, validation with paths and lines, publish rules, preview for a real
contact, scopes and tenant isolation."""

from __future__ import annotations

MARKETING_HTML = (
    "<p>Hi {{ contact.first_name | default('there') }}</p>"
    '<p>{{ workspace.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
)


def _create(client, ws, **overrides):
    body = {
        "key": "spring",
        "name": "Spring sale",
        "kind": "marketing",
        "variants": [{"language": "en", "subject": "Spring, {{ contact.first_name }}", "html": MARKETING_HTML}],
    } | overrides
    return client.post("/api/v1/templates", json=body, headers=ws.auth("write"))


def test_crud_validate_publish_and_preview(client, workspace) -> None:
    r = _create(client, workspace)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert r.json()["status"] == "draft"
    r = client.put(
        f"/api/v1/templates/{tid}/variants/fi",
        json={"subject": "Kevät, {{ contact.first_name }}", "html": MARKETING_HTML.replace("Hi", "Hei")},
        headers=workspace.auth("write"),
    )
    assert [v["language"] for v in r.json()["variants"]] == ["en", "fi"]
    report = client.post(f"/api/v1/templates/{tid}/validate", headers=workspace.auth("read")).json()
    assert report == {"valid": True, "publishable": True, "errors": [], "publish_errors": []}
    r = client.post(f"/api/v1/templates/{tid}/publish", headers=workspace.auth("write"))
    assert r.json()["status"] == "published"
    contact = client.post(
        "/api/v1/contacts",
        json={"email": "aino@example.fi", "first_name": "Aino", "language": "fi"},
        headers=workspace.auth("write"),
    ).json()
    r = client.post(
        f"/api/v1/templates/{tid}/preview", json={"contact_id": contact["id"]}, headers=workspace.auth("read")
    )
    assert r.status_code == 200, r.text
    assert r.json()["language"] == "fi"
    assert r.json()["subject"] == "Kevät, Aino"
    assert "Hei Aino" in r.json()["text"]
    r = client.post(
        f"/api/v1/templates/{tid}/preview",
        json={"contact_id": contact["id"], "language": "en"},
        headers=workspace.auth("read"),
    )
    assert r.json()["subject"] == "Spring, Aino"
    r = client.patch(f"/api/v1/templates/{tid}", json={"name": "Renamed"}, headers=workspace.auth("write"))
    assert r.json()["name"] == "Renamed"
    listed = client.get("/api/v1/templates", headers=workspace.auth("read")).json()["items"]
    assert "spring" in [t["key"] for t in listed] and "welcome" in [t["key"] for t in listed]
    assert client.delete(f"/api/v1/templates/{tid}/variants/fi", headers=workspace.auth("write")).status_code == 200
    assert client.delete(f"/api/v1/templates/{tid}", headers=workspace.auth("write")).status_code == 204
    assert client.get(f"/api/v1/templates/{tid}", headers=workspace.auth("read")).status_code == 404


def test_invalid_template_answers_422_with_every_issue(client, workspace) -> None:
    r = _create(
        client,
        workspace,
        key="bad",
        variants=[
            {"language": "en", "subject": "ok", "html": "<p>{{ ''.__class__.__mro__ }}</p>"},
            {"language": "fi", "subject": "{{ nope }}", "html": "<p>\n{% for %}</p>"},
        ],
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "template_invalid"
    paths = {(d["path"], d["line"]) for d in err["details"]}
    assert ("variants.en.html", 1) in paths
    assert ("variants.fi.subject", 1) in paths
    assert ("variants.fi.html", 2) in paths


def test_marketing_without_unsubscribe_cannot_be_published(client, workspace) -> None:
    tid = _create(
        client,
        workspace,
        variants=[{"language": "en", "subject": "Hi", "html": "<p>{{ workspace.postal_address }}</p>"}],
    ).json()["id"]
    report = client.post(f"/api/v1/templates/{tid}/validate", headers=workspace.auth("read")).json()
    assert report["valid"] is True and report["publishable"] is False
    assert report["publish_errors"][0]["path"] == "variants.en.html"
    r = client.post(f"/api/v1/templates/{tid}/publish", headers=workspace.auth("write"))
    assert r.status_code == 422
    assert "unsubscribe" in r.json()["error"]["message"]


def test_scopes_and_isolation(client, workspace, other_workspace) -> None:
    assert _create(client, workspace, key="x1").status_code == 201
    r = client.post(
        "/api/v1/templates",
        json={"key": "x2", "variants": []},
        headers=workspace.auth("read"),
    )
    assert r.status_code == 403
    tid = client.get("/api/v1/templates", headers=workspace.auth("read")).json()["items"][0]["id"]
    for method, path, body in [
        ("get", f"/api/v1/templates/{tid}", None),
        ("patch", f"/api/v1/templates/{tid}", {"name": "stolen"}),
        ("post", f"/api/v1/templates/{tid}/validate", None),
        ("post", f"/api/v1/templates/{tid}/publish", None),
        ("post", f"/api/v1/templates/{tid}/preview", {"contact_id": 1}),
        ("put", f"/api/v1/templates/{tid}/variants/en", {"subject": "x", "html": "<p>x</p>"}),
        ("delete", f"/api/v1/templates/{tid}", None),
    ]:
        r = client.request(method, path, json=body, headers=other_workspace.auth("admin"))
        assert r.status_code == 404, (method, path, r.text)
    assert client.get(f"/api/v1/templates/{tid}", headers=workspace.auth("read")).json()["name"] != "stolen"
