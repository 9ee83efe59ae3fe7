"""Contacts over HTTP: normalisation, validation with field paths, tags, optimistic locking, list and search."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.models import AuditLog


def _create(client, workspace, **body):
    res = client.post("/api/v1/contacts", json=body, headers=workspace.auth("write"))
    assert res.status_code == 201, res.text
    return res.json()


def _define(client, workspace, name, type_, options=None, object_type="contact"):
    body = {"object_type": object_type, "name": name, "type": type_, "options": options or []}
    res = client.post("/api/v1/properties", json=body, headers=workspace.auth("admin"))
    assert res.status_code == 201, res.text
    return res.json()


def test_email_is_normalised_and_unique(client, workspace) -> None:
    c = _create(client, workspace, email="  Alice@EXAMPLE.com ", first_name=" Alice ", last_name="Smith")
    assert c["email"] == "alice@example.com"
    assert c["first_name"] == "Alice" and c["version"] == 1 and c["lifecycle_stage"] == "awareness"
    res = client.post("/api/v1/contacts", json={"email": "ALICE@example.COM"}, headers=workspace.auth("write"))
    assert res.status_code == 409
    assert res.json()["error"]["path"] == "email"
    listed = client.get("/api/v1/contacts", headers=workspace.auth("read")).json()["items"]
    assert [x["email"] for x in listed] == ["alice@example.com"]


def test_idn_domain_becomes_ascii(client, workspace) -> None:
    c = _create(client, workspace, email="Päivi@Bücher.Example")
    assert c["email"] == "päivi@xn--bcher-kva.example"


def test_invalid_email_names_the_field(client, workspace) -> None:
    res = client.post("/api/v1/contacts", json={"email": "not-an-address"}, headers=workspace.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "email"


def test_phone_e164_with_contact_or_workspace_country(client, workspace) -> None:
    se = _create(client, workspace, email="sven@example.se", phone="070-123 45 67", country="se")
    assert se["phone"] == "+46701234567" and se["country"] == "SE"
    fi = _create(client, workspace, email="matti@example.fi", phone="040 123 4567")
    assert fi["phone"] == "+358401234567"
    res = client.post("/api/v1/contacts", json={"phone": "12"}, headers=workspace.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "phone"


def test_timezone_language_country(client, workspace) -> None:
    us = _create(client, workspace, email="joe@example.com", country="US", language="en-US")
    assert us["timezone"] == "America/New_York" and us["language"] == "en"
    given = _create(client, workspace, email="ann@example.com", country="US", timezone="America/Chicago")
    assert given["timezone"] == "America/Chicago"
    res = client.post(
        "/api/v1/contacts", json={"email": "x@example.com", "timezone": "Mars/Olympus"}, headers=workspace.auth("write")
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "timezone"
    res = client.post(
        "/api/v1/contacts", json={"email": "y@example.com", "country": "XX"}, headers=workspace.auth("write")
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "country"
    moved = client.patch(f"/api/v1/contacts/{us['id']}", json={"country": "SE"}, headers=workspace.auth("write")).json()
    assert moved["timezone"] == "Europe/Stockholm"


def test_custom_properties_are_validated(client, workspace) -> None:
    _define(client, workspace, "plan", "enum", ["free", "pro"])
    _define(client, workspace, "seats", "number")
    _define(client, workspace, "renewal", "date")
    _define(client, workspace, "vip", "boolean")
    _define(client, workspace, "interests", "multi_enum", ["shoes", "bags", "hats"])
    _define(client, workspace, "nickname", "string")
    c = _create(
        client,
        workspace,
        email="p@example.com",
        properties={
            "plan": "pro",
            "seats": 5,
            "renewal": "2025-03-01",
            "vip": True,
            "interests": ["hats", "shoes"],
            "nickname": "P",
        },
    )
    assert c["properties"] == {
        "plan": "pro",
        "seats": 5,
        "renewal": "2025-03-01",
        "vip": True,
        "interests": ["shoes", "hats"],
        "nickname": "P",
    }
    bad = [
        ({"plan": "gold"}, "properties.plan"),
        ({"seats": "five"}, "properties.seats"),
        ({"seats": True}, "properties.seats"),
        ({"renewal": "01/03/2025"}, "properties.renewal"),
        ({"vip": "yes"}, "properties.vip"),
        ({"interests": ["shoes", "socks"]}, "properties.interests"),
        ({"nickname": 3}, "properties.nickname"),
        ({"shoe_size": 42}, "properties.shoe_size"),
    ]
    for props, path in bad:
        res = client.patch(f"/api/v1/contacts/{c['id']}", json={"properties": props}, headers=workspace.auth("write"))
        assert res.status_code == 422, props
        assert res.json()["error"]["path"] == path
    after = client.get(f"/api/v1/contacts/{c['id']}", headers=workspace.auth("read")).json()
    assert after["properties"] == c["properties"] and after["version"] == 1
    res = client.patch(
        f"/api/v1/contacts/{c['id']}", json={"properties": {"plan": None, "seats": 7}}, headers=workspace.auth("write")
    )
    assert res.status_code == 200
    assert "plan" not in res.json()["properties"] and res.json()["properties"]["seats"] == 7


def test_property_type_change_refused_while_in_use(client, workspace) -> None:
    prop = _define(client, workspace, "score", "number")
    c = _create(client, workspace, email="s@example.com", properties={"score": 3})
    res = client.patch(f"/api/v1/properties/{prop['id']}", json={"type": "string"}, headers=workspace.auth("admin"))
    assert res.status_code == 409 and res.json()["error"]["code"] == "property_in_use"
    assert client.delete(f"/api/v1/properties/{prop['id']}", headers=workspace.auth("admin")).status_code == 409
    client.patch(f"/api/v1/contacts/{c['id']}", json={"properties": {"score": None}}, headers=workspace.auth("write"))
    res = client.patch(f"/api/v1/properties/{prop['id']}", json={"type": "string"}, headers=workspace.auth("admin"))
    assert res.status_code == 200 and res.json()["type"] == "string"
    assert (
        client.post(
            "/api/v1/properties",
            json={"object_type": "contact", "name": "score", "type": "number"},
            headers=workspace.auth("admin"),
        ).status_code
        == 409
    )
    res = client.post(
        "/api/v1/properties",
        json={"object_type": "contact", "name": "tier", "type": "enum"},
        headers=workspace.auth("admin"),
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "options"
    res = client.post(
        "/api/v1/properties",
        json={"object_type": "contact", "name": "x", "type": "number"},
        headers=workspace.auth("write"),
    )
    assert res.status_code == 403


def test_tags_are_sorted_and_editable(client, workspace) -> None:
    c = _create(client, workspace, email="t@example.com", tags=["VIP", "newsletter", "vip"])
    assert c["tags"] == ["newsletter", "vip"]
    h = workspace.auth("write")
    assert client.post(f"/api/v1/contacts/{c['id']}/tags", json={"tags": ["beta"]}, headers=h).json() == [
        "beta",
        "newsletter",
        "vip",
    ]
    assert client.delete(f"/api/v1/contacts/{c['id']}/tags/vip", headers=h).json() == ["beta", "newsletter"]
    assert client.put(f"/api/v1/contacts/{c['id']}/tags", json={"tags": ["z", "a"]}, headers=h).json() == ["a", "z"]
    res = client.patch(f"/api/v1/contacts/{c['id']}", json={"tags": ["ok", "  "]}, headers=h)
    assert res.status_code == 422 and res.json()["error"]["path"] == "tags[1]"
    got = client.get(f"/api/v1/contacts/{c['id']}", headers=workspace.auth("read")).json()
    assert got["tags"] == ["a", "z"]
    tagged = client.get("/api/v1/contacts", params={"tag": "a"}, headers=workspace.auth("read")).json()["items"]
    assert [x["id"] for x in tagged] == [c["id"]]


def test_version_conflict_changes_nothing(client, workspace) -> None:
    c = _create(client, workspace, email="v@example.com", first_name="Vera")
    h = workspace.auth("write")
    first = client.patch(f"/api/v1/contacts/{c['id']}", json={"first_name": "Veera", "version": 1}, headers=h)
    assert first.status_code == 200 and first.json()["version"] == 2
    stale = client.patch(f"/api/v1/contacts/{c['id']}", json={"first_name": "Wera", "version": 1}, headers=h)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"
    stale = client.patch(f"/api/v1/contacts/{c['id']}", json={"job_title": "CEO"}, headers={**h, "If-Match": '"1"'})
    assert stale.status_code == 409
    now = client.get(f"/api/v1/contacts/{c['id']}", headers=workspace.auth("read")).json()
    assert now["first_name"] == "Veera" and now["job_title"] is None and now["version"] == 2
    ok = client.patch(f"/api/v1/contacts/{c['id']}", json={"job_title": "CEO"}, headers={**h, "If-Match": "2"})
    assert ok.status_code == 200 and ok.json()["version"] == 3
    plain = client.patch(f"/api/v1/contacts/{c['id']}", json={"city": "Turku"}, headers=h)
    assert plain.json()["version"] == 4


def test_owner_must_be_member(client, workspace, other_workspace, session_factory) -> None:
    with session_factory() as s:
        member = workspaces_service.create_user(
            s, email=f"m-{secrets.token_hex(4)}@example.com", name="M", password_hash=None
        )
        stranger = workspaces_service.create_user(
            s, email=f"s-{secrets.token_hex(4)}@example.com", name="S", password_hash=None
        )
        workspaces_service.add_member(s, workspace.id, member.id, "sales")
        workspaces_service.add_member(s, other_workspace.id, stranger.id, "sales")
        s.commit()
        member_id, stranger_id = member.id, stranger.id
    c = _create(client, workspace, email="o@example.com", owner_id=member_id)
    assert c["owner_id"] == member_id
    res = client.patch(f"/api/v1/contacts/{c['id']}", json={"owner_id": stranger_id}, headers=workspace.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "owner_id"
    owned = client.get("/api/v1/contacts", params={"owner_id": member_id}, headers=workspace.auth("read")).json()
    assert [x["id"] for x in owned["items"]] == [c["id"]]


def test_pagination_walks_every_contact_once(client, workspace) -> None:
    ids = {_create(client, workspace, email=f"p{i}@example.com")["id"] for i in range(23)}
    _create(client, workspace, is_anonymous=True)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/contacts", params=params, headers=workspace.auth("read")).json()
        seen += [x["id"] for x in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 5 and len(seen) == 23 and set(seen) == ids
    assert seen == sorted(seen, reverse=True)
    every = client.get(
        "/api/v1/contacts", params={"include_anonymous": True, "limit": 200}, headers=workspace.auth("read")
    )
    assert len(every.json()["items"]) == 24
    bad = client.get("/api/v1/contacts", params={"cursor": "garbage!"}, headers=workspace.auth("read"))
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "cursor"
    assert client.get("/api/v1/contacts", params={"limit": 201}, headers=workspace.auth("read")).status_code == 422


def test_search_by_email_and_names(client, workspace) -> None:
    a = _create(client, workspace, email="anna.k@example.com", first_name="Anna", last_name="Korhonen")
    b = _create(client, workspace, email="bob@example.com", first_name="Bob", last_name="Annala")
    c = _create(client, workspace, email="carl@example.com", first_name="Carl", last_name="Berg")

    def q(text):
        res = client.get("/api/v1/contacts", params={"q": text}, headers=workspace.auth("read"))
        assert res.status_code == 200
        return {x["id"] for x in res.json()["items"]}

    assert q("ANN") == {a["id"], b["id"]}
    assert q("bob@") == {b["id"]}
    assert q("Anna Kor") == {a["id"]}
    assert q("anna berg") == set()
    assert q("berg") == {c["id"]}
    assert q("zz") == set()


def test_filters(client, workspace) -> None:
    fi = _create(client, workspace, email="f@example.com", country="FI", lifecycle_stage="customer")
    se = _create(client, workspace, email="s@example.com", country="SE")
    r = workspace.auth("read")
    assert [x["id"] for x in client.get("/api/v1/contacts", params={"country": "fi"}, headers=r).json()["items"]] == [
        fi["id"]
    ]
    by_stage = client.get("/api/v1/contacts", params={"lifecycle_stage": "customer"}, headers=r).json()["items"]
    assert [x["id"] for x in by_stage] == [fi["id"]]
    after = client.get("/api/v1/contacts", params={"created_after": se["created_at"]}, headers=r).json()["items"]
    assert se["id"] in [x["id"] for x in after] and fi["id"] not in [x["id"] for x in after]
    before = client.get("/api/v1/contacts", params={"created_before": se["created_at"]}, headers=r).json()["items"]
    assert [x["id"] for x in before] == [fi["id"]]


def test_delete_is_audited(client, workspace, session_factory) -> None:
    c = _create(client, workspace, email="gone@example.com")
    assert client.delete(f"/api/v1/contacts/{c['id']}", headers=workspace.auth("write")).status_code == 204
    assert client.get(f"/api/v1/contacts/{c['id']}", headers=workspace.auth("read")).status_code == 404
    with session_factory() as s:
        entry = s.scalar(
            select(AuditLog).where(AuditLog.workspace_id == workspace.id, AuditLog.action == "contact.deleted")
        )
        assert entry is not None and entry.subject_id == c["id"] and entry.details["email"] == "gone@example.com"
    again = _create(client, workspace, email="gone@example.com")
    assert again["id"] != c["id"]


def test_read_key_cannot_write(client, workspace) -> None:
    res = client.post("/api/v1/contacts", json={"email": "r@example.com"}, headers=workspace.auth("read"))
    assert res.status_code == 403
    assert client.get("/api/v1/contacts", headers=workspace.auth("track")).status_code == 403
