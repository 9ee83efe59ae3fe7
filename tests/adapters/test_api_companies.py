"""Companies over HTTP: normalised unique domains, validation, search, auto-linking contacts by email domain."""

from __future__ import annotations


def _company(client, workspace, **body):
    res = client.post("/api/v1/companies", json=body, headers=workspace.auth("write"))
    assert res.status_code == 201, res.text
    return res.json()


def test_domain_is_normalised_and_unique(client, workspace) -> None:
    c = _company(client, workspace, name="Acme Oy", domain="https://www.ACME.fi/about", country="fi")
    assert c["domain"] == "acme.fi" and c["country"] == "FI"
    res = client.post("/api/v1/companies", json={"name": "Other", "domain": "acme.FI"}, headers=workspace.auth("write"))
    assert res.status_code == 409 and res.json()["error"]["path"] == "domain"
    idn = _company(client, workspace, domain="bücher.example")
    assert idn["domain"] == "xn--bcher-kva.example" and idn["name"] == "Bücher"
    res = client.post(
        "/api/v1/companies", json={"name": "X", "domain": "not a domain"}, headers=workspace.auth("write")
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "domain"


def test_fields_are_validated(client, workspace) -> None:
    h = workspace.auth("write")
    res = client.post("/api/v1/companies", json={"name": "A", "employees": -1}, headers=h)
    assert res.status_code == 422 and res.json()["error"]["path"] == "body.employees"
    res = client.post("/api/v1/companies", json={"name": "A", "annual_revenue_minor": 100}, headers=h)
    assert res.status_code == 422 and res.json()["error"]["path"] == "revenue_currency"
    res = client.post("/api/v1/companies", json={"name": "A", "revenue_currency": "eur"}, headers=h)
    assert res.status_code == 422 and res.json()["error"]["path"] == "body.revenue_currency"
    res = client.post("/api/v1/companies", json={"name": "A", "properties": {"tier": "gold"}}, headers=h)
    assert res.status_code == 422 and res.json()["error"]["path"] == "properties.tier"
    client.post(
        "/api/v1/properties",
        json={"object_type": "company", "name": "tier", "type": "enum", "options": ["gold", "silver"]},
        headers=workspace.auth("admin"),
    )
    c = _company(
        client,
        workspace,
        name="Big",
        employees=250,
        annual_revenue_minor=12_000_000_00,
        revenue_currency="EUR",
        industry="Retail",
        city="Tampere",
        properties={"tier": "gold"},
    )
    assert c["annual_revenue_minor"] == 1_200_000_000 and c["properties"] == {"tier": "gold"}
    res = client.patch(f"/api/v1/companies/{c['id']}", json={"properties": {"tier": "bronze"}}, headers=h)
    assert res.status_code == 422 and res.json()["error"]["path"] == "properties.tier"
    res = client.patch(f"/api/v1/companies/{c['id']}", json={"name": "Bigger", "employees": 300}, headers=h)
    assert res.json()["name"] == "Bigger" and res.json()["employees"] == 300


def test_list_search_and_delete(client, workspace) -> None:
    a = _company(client, workspace, name="Nordic Tools", domain="nordictools.fi")
    b = _company(client, workspace, name="nordea-like", domain="nordea-like.com")
    c = _company(client, workspace, name="Baltic Boats", domain="balticboats.lv")
    r = workspace.auth("read")
    names = client.get("/api/v1/companies", params={"q": "NORD"}, headers=r).json()["items"]
    assert [x["id"] for x in names] == [b["id"], a["id"]]
    by_domain = client.get("/api/v1/companies", params={"domain": "WWW.balticboats.lv"}, headers=r).json()["items"]
    assert [x["id"] for x in by_domain] == [c["id"]]
    page1 = client.get("/api/v1/companies", params={"limit": 2}, headers=r).json()
    page2 = client.get("/api/v1/companies", params={"limit": 2, "cursor": page1["next_cursor"]}, headers=r).json()
    assert [x["id"] for x in page1["items"] + page2["items"]] == [c["id"], b["id"], a["id"]]
    assert page2["next_cursor"] is None
    contact = client.post(
        "/api/v1/contacts", json={"email": "x@balticboats.lv"}, headers=workspace.auth("write")
    ).json()
    assert contact["company_id"] == c["id"]
    assert client.delete(f"/api/v1/companies/{c['id']}", headers=workspace.auth("write")).status_code == 204
    assert client.get(f"/api/v1/companies/{c['id']}", headers=r).status_code == 404
    assert client.get(f"/api/v1/contacts/{contact['id']}", headers=r).json()["company_id"] is None


def test_work_email_links_company_but_free_mail_does_not(client, workspace) -> None:
    h = workspace.auth("write")
    r = workspace.auth("read")
    first = client.post("/api/v1/contacts", json={"email": "Eva@Kauppa-Example.FI"}, headers=h).json()
    assert first["company_id"] is not None
    company = client.get(f"/api/v1/companies/{first['company_id']}", headers=r).json()
    assert company["domain"] == "kauppa-example.fi" and company["name"] == "Kauppa Example"
    second = client.post("/api/v1/contacts", json={"email": "olli@kauppa-example.fi"}, headers=h).json()
    assert second["company_id"] == first["company_id"]
    gmail = client.post("/api/v1/contacts", json={"email": "someone@gmail.com"}, headers=h).json()
    assert gmail["company_id"] is None
    assert client.get("/api/v1/companies", params={"domain": "gmail.com"}, headers=r).json()["items"] == []
    later = client.post("/api/v1/contacts", json={"first_name": "Later"}, headers=h).json()
    assert later["company_id"] is None
    linked = client.patch(f"/api/v1/contacts/{later['id']}", json={"email": "later@kauppa-example.fi"}, headers=h)
    assert linked.json()["company_id"] == first["company_id"]
    members = client.get(f"/api/v1/companies/{first['company_id']}/contacts", headers=r).json()
    assert [x["id"] for x in members["items"]] == [later["id"], second["id"], first["id"]]
