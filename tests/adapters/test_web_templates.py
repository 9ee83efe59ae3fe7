"""Templates and broadcasts pages: list, editor with per-language variants and the service's validation messages
(typed input kept), publish/unpublish, the preview for a real contact under a strict CSP, broadcast scheduling,
roles, CSRF and isolation between workspaces."""

from __future__ import annotations

import html as htmllib

import pytest

from tests.adapters.test_web_shell import csrf_of, login, make_user

SCRIPT = "<script>alert('tpl')</script>"
VALID_HTML = (
    '<p>Hei {{ contact.first_name }}!</p><p>{{ workspace.postal_address }}</p><a href="{{ unsubscribe_url }}">Peru</a>'
)


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    yield
    client.cookies.clear()


def set_address(client, ws) -> None:
    res = client.patch(
        "/api/v1/workspace",
        json={"address_line1": "Esplanadi 1", "postal_code": "00100", "city": "Helsinki", "address_country": "FI"},
        headers=ws.auth("admin"),
    )
    assert res.status_code == 200, res.text


def new_template(client, ws, key: str = "spring", token: str | None = None) -> int:
    url = f"/app/w/{ws.slug}/templates"
    token = token or csrf_of(client.get(url).text)
    res = client.post(url, data={"key": key, "name": "Spring sale", "kind": "marketing", "csrf_token": token})
    assert res.status_code == 200, res.text
    return int(str(res.url).split("/templates/")[1].split("?")[0])


def test_list_create_and_edit_a_variant_with_validation_messages(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "marketer"))
    base = f"/app/w/{workspace.slug}"
    page = client.get(f"{base}/templates")
    assert page.status_code == 200 and "templates-table" in page.text
    token = csrf_of(page.text)
    # A bad key is refused with the message next to the field, keeping what was typed.
    bad = client.post(f"{base}/templates", data={"key": "Bad Key!", "name": "Kept name", "csrf_token": token})
    assert bad.status_code == 422 and 'value="Bad Key!"' in bad.text and 'value="Kept name"' in bad.text
    tid = new_template(client, workspace, token=token)
    editor = client.get(f"{base}/templates/{tid}?lang=fi")
    assert editor.status_code == 200 and 'aria-current="page">Suomi' in editor.text
    # An unknown variable and a syntax error: refused, messages per field, the typed text kept.
    typed_html = "<p>{{ contact.shoe_size }}</p>"
    res = client.post(
        f"{base}/templates/{tid}/variants/fi",
        data={"subject": "Hei {{ contact.first_name", "preheader": "esi", "html": typed_html, "csrf_token": token},
    )
    assert res.status_code == 422
    assert 'id="e-subject"' in res.text and 'id="e-html"' in res.text and "shoe_size" in res.text
    assert htmllib.escape(typed_html, quote=False) in res.text and 'value="Hei {{ contact.first_name"' in res.text
    # Nothing was stored.
    tpl = client.get(f"/api/v1/templates/{tid}", headers=workspace.auth()).json()
    assert tpl["variants"] == []
    # A valid variant saves; the list shows its language.
    res = client.post(
        f"{base}/templates/{tid}/variants/fi",
        data={
            "subject": "Kevätale, {{ contact.first_name }}",
            "preheader": "",
            "html": VALID_HTML,
            "csrf_token": token,
        },
    )
    assert res.status_code == 200 and "Variant saved." in res.text
    tpl = client.get(f"/api/v1/templates/{tid}", headers=workspace.auth()).json()
    assert [v["language"] for v in tpl["variants"]] == ["fi"]
    assert "fi" in client.get(f"{base}/templates").text


def test_publish_needs_the_postal_address_then_unpublish(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "admin"))
    base = f"/app/w/{workspace.slug}"
    tid = new_template(client, workspace)
    token = csrf_of(client.get(f"{base}/templates/{tid}").text)
    data = {"subject": "Spring", "preheader": "", "html": VALID_HTML, "csrf_token": token}
    assert client.post(f"{base}/templates/{tid}/variants/en", data=data).status_code == 200
    cleared = client.patch("/api/v1/workspace", json={"address_line1": ""}, headers=workspace.auth("admin"))
    assert cleared.status_code == 200, cleared.text
    refused = client.post(f"{base}/templates/{tid}/publish", data={"csrf_token": token, "lang": "en"})
    assert refused.status_code == 422 and "postal address" in refused.text and 'id="template-errors"' in refused.text
    set_address(client, workspace)
    res = client.post(f"{base}/templates/{tid}/publish", data={"csrf_token": token, "lang": "en"})
    assert res.status_code == 200 and "Template published." in res.text
    assert client.get(f"/api/v1/templates/{tid}", headers=workspace.auth()).json()["status"] == "published"
    # A published marketing template cannot lose its unsubscribe link.
    broken = dict(data, html="<p>{{ workspace.postal_address }}</p>")
    res = client.post(f"{base}/templates/{tid}/variants/en", data=broken)
    assert res.status_code == 422 and "unsubscribe" in res.text
    res = client.post(f"{base}/templates/{tid}/unpublish", data={"csrf_token": token})
    assert res.status_code == 200 and "a draft again" in res.text


def test_preview_for_a_contact_in_a_chosen_language_under_a_strict_csp(client, session_factory, workspace) -> None:
    set_address(client, workspace)
    c = client.post(
        "/api/v1/contacts",
        json={"email": "aino@example.com", "first_name": f"Aino{SCRIPT}", "language": "sv"},
        headers=workspace.auth(),
    ).json()
    login(client, make_user(session_factory, workspace.id, "analyst"))
    base = f"/app/w/{workspace.slug}"
    tpl = client.post(
        "/api/v1/templates",
        json={
            "key": "hello",
            "variants": [
                {"language": "fi", "subject": "Hei {{ contact.first_name }}", "html": VALID_HTML},
                {"language": "sv", "subject": "Hej {{ contact.first_name }}", "html": VALID_HTML.replace("Hei", "Hej")},
            ],
        },
        headers=workspace.auth(),
    ).json()
    found = client.get(f"{base}/templates/{tpl['id']}/preview", params={"q": "aino"})
    assert found.status_code == 200 and f"contact={c['id']}" in found.text
    page = client.get(f"{base}/templates/{tpl['id']}/preview", params={"contact": c["id"], "lang": "fi"})
    assert page.status_code == 200 and 'id="preview-subject">Hei Aino&lt;script&gt;' in page.text
    assert SCRIPT not in page.text and "<iframe" in page.text and "sandbox" in page.text
    # Without a language the contact's own (Swedish) variant is used.
    page = client.get(f"{base}/templates/{tpl['id']}/preview", params={"contact": c["id"]})
    assert 'id="preview-subject">Hej Aino' in page.text
    body = client.get(f"{base}/templates/{tpl['id']}/preview/body", params={"contact": c["id"], "lang": "fi"})
    assert body.status_code == 200 and "Hei Aino&lt;script&gt;" in body.text and SCRIPT not in body.text
    csp = body.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    # The analyst reads but cannot change templates.
    editor = client.get(f"{base}/templates/{tpl['id']}")
    assert editor.status_code == 200 and 'id="save-variant"' not in editor.text and "readonly" in editor.text
    token = csrf_of(editor.text)
    denied = client.post(f"{base}/templates/{tpl['id']}/publish", data={"csrf_token": token})
    assert denied.status_code == 403


def test_csrf_roles_and_other_workspaces(client, session_factory, workspace, other_workspace) -> None:
    foreign = client.post(
        "/api/v1/templates",
        json={"key": "theirs", "variants": [{"language": "en", "subject": "x", "html": "<p>x</p>"}]},
        headers=other_workspace.auth(),
    ).json()
    login(client, make_user(session_factory, workspace.id, "sales"))
    base = f"/app/w/{workspace.slug}"
    assert client.get(f"{base}/templates/{foreign['id']}").status_code == 404
    assert client.get(f"/app/w/{other_workspace.slug}/templates").status_code == 404
    token = csrf_of(client.get(f"{base}/templates").text)
    assert client.post(f"{base}/templates", data={"key": "x", "csrf_token": token}).status_code == 403  # sales
    client.cookies.clear()
    login(client, make_user(session_factory, workspace.id, "marketer"))
    assert client.post(f"{base}/templates", data={"key": "nocsrf"}).status_code == 403
    assert (
        client.post(
            f"{base}/templates/{foreign['id']}/publish",
            data={"csrf_token": csrf_of(client.get(f"{base}/templates").text)},
        ).status_code
        == 404
    )


def test_schedule_broadcasts_and_list_them_with_counts(client, session_factory, workspace) -> None:
    set_address(client, workspace)
    ids = []
    for i in range(3):
        c = client.post(
            "/api/v1/contacts", json={"email": f"b{i}@example.com", "tags": ["vip"]}, headers=workspace.auth()
        )
        ids.append(c.json()["id"])
    tpl = client.post(
        "/api/v1/templates",
        json={"key": "news", "variants": [{"language": "en", "subject": "News", "html": VALID_HTML}]},
        headers=workspace.auth(),
    ).json()
    login(client, make_user(session_factory, workspace.id, "marketer"))
    base = f"/app/w/{workspace.slug}"
    page = client.get(f"{base}/broadcasts")
    token = csrf_of(page.text)
    # Only published templates can be broadcast: the draft is refused and the form keeps its input.
    res = client.post(
        f"{base}/broadcasts",
        data={
            "name": "VIP news",
            "template_key": "news",
            "audience": "tag",
            "tag": "vip",
            "timing": "now",
            "csrf_token": token,
        },
    )
    assert res.status_code == 422 and "published" in res.text and 'value="VIP news"' in res.text
    assert client.post(f"/api/v1/templates/{tpl['id']}/publish", headers=workspace.auth()).status_code == 200
    bad = client.post(
        f"{base}/broadcasts",
        data={"name": "Few", "template_key": "news", "audience": "contacts", "contacts": "12, x", "csrf_token": token},
    )
    assert bad.status_code == 422 and "not a contact id" in bad.text and 'value="12, x"' in bad.text
    res = client.post(
        f"{base}/broadcasts",
        data={
            "name": "VIP news",
            "template_key": "news",
            "audience": "tag",
            "tag": "vip",
            "timing": "now",
            "csrf_token": token,
        },
    )
    assert res.status_code == 200 and "Broadcast scheduled." in res.text
    res = client.post(
        f"{base}/broadcasts",
        data={
            "name": "Morning",
            "template_key": "news",
            "audience": "contacts",
            "contacts": f"{ids[0]} {ids[1]}",
            "timing": "local",
            "local_date": "2031-03-01",
            "local_time": "09:30",
            "csrf_token": token,
        },
    )
    assert res.status_code == 200 and "09:30" in res.text and "2 contacts" in res.text
    # At a moment, typed in the workspace's time zone (Europe/Helsinki): stored as the UTC instant.
    bad = client.post(
        f"{base}/broadcasts",
        data={
            "name": "Later",
            "template_key": "news",
            "tag": "vip",
            "timing": "at",
            "send_at": "soon",
            "csrf_token": token,
        },
    )
    assert bad.status_code == 422 and "give a date and time" in bad.text and 'value="soon"' in bad.text
    res = client.post(
        f"{base}/broadcasts",
        data={
            "name": "Later",
            "template_key": "news",
            "tag": "vip",
            "timing": "at",
            "send_at": "2031-06-01T09:00",
            "csrf_token": token,
        },
    )
    assert res.status_code == 200
    from sqlalchemy import select

    from suppilo.messaging.outbox_models import Broadcast

    with session_factory() as s:
        later = s.scalar(select(Broadcast).where(Broadcast.workspace_id == workspace.id, Broadcast.name == "Later"))
        assert later is not None and later.send_at.isoformat() == "2031-06-01T06:00:00+00:00"
    # The worker queues the due one; the list shows how many were queued.
    from suppilo.messaging.broadcasts import run_due_broadcasts

    assert run_due_broadcasts(session_factory) == 3
    page = client.get(f"{base}/broadcasts").text
    row = page[page.index("VIP news") : page.index("</tr>", page.index("VIP news"))]
    assert "Queued" in row and ">3<" in row
